-- 4 -> 5 (issue 28): the broadcast. Every change the login fast path keeps
-- in memory (src/engine/fresh.rs) sends a notification on the channel
-- saslgate_changes, from triggers, so a change typed by hand in psql is
-- covered as well as every saslgate's. PostgreSQL delivers a notification
-- only after its transaction commits, to every session then listening.
--
-- Payloads (no name, no address, no secret: any role that may connect to
-- the database may LISTEN, see SECURITY.md):
--   'all'        the generation moved (every admin change, by the generation
--                triggers: accounts, app passwords, plans, overrides,
--                aliases, blocks, routes, holds, meta) or any change to
--                saslgate_meta, or the throttle table was truncated;
--   'acct:ID'    a throttle row of account ID changed (its failures counted,
--                cleared, blocked, unblocked);
--   'addr'       an address's throttle row started or stopped refusing
--                (the address is not named: every address's knowledge is
--                dropped).
-- A throttle row of a name that is no account sends nothing: nothing is
-- kept in memory for it, and making the account moves the generation.
CREATE OR REPLACE FUNCTION saslgate_notify_all() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    PERFORM pg_notify('saslgate_changes', 'all');
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION saslgate_notify_throttle() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    row_key text;
    acct_name text;
    account bigint;
    blocked_before bigint := 0;
    blocked_after bigint := 0;
BEGIN
    IF TG_OP = 'DELETE' THEN
        row_key := OLD.key;
    ELSE
        row_key := NEW.key;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        blocked_before := OLD.blocked_until;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        blocked_after := NEW.blocked_until;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.key IS DISTINCT FROM NEW.key THEN
        -- A key renamed by hand: nothing tells which account it was.
        PERFORM pg_notify('saslgate_changes', 'all');
        RETURN NULL;
    END IF;
    IF left(row_key, 2) = 'a:' THEN
        -- The fast path reads an address row only for its block.
        IF blocked_before IS DISTINCT FROM blocked_after THEN
            PERFORM pg_notify('saslgate_changes', 'addr');
        END IF;
        RETURN NULL;
    ELSIF left(row_key, 2) = 'p:' THEN
        -- 'p:ACCOUNT|GROUP': the group (an address or network) has no '|'.
        acct_name := substr(row_key, 3);
        acct_name := left(acct_name, length(acct_name) - strpos(reverse(acct_name), '|'));
    ELSIF left(row_key, 2) = 's:' THEN
        acct_name := substr(row_key, 3);
    ELSE
        PERFORM pg_notify('saslgate_changes', 'all');
        RETURN NULL;
    END IF;
    SELECT id INTO account FROM accounts WHERE accounts.name = acct_name;
    IF account IS NOT NULL THEN
        PERFORM pg_notify('saslgate_changes', 'acct:' || account);
    END IF;
    RETURN NULL;
END $$;

REVOKE ALL ON FUNCTION saslgate_notify_all(), saslgate_notify_throttle() FROM PUBLIC;

-- Idempotent (a hand-made older schema may still have them).
DROP TRIGGER IF EXISTS saslgate_notify_meta ON saslgate_meta;
DROP TRIGGER IF EXISTS saslgate_notify_throttle_truncate ON throttle;
DROP TRIGGER IF EXISTS saslgate_notify_throttle_rows ON throttle;
CREATE TRIGGER saslgate_notify_meta
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON saslgate_meta
    FOR EACH STATEMENT EXECUTE FUNCTION saslgate_notify_all();
CREATE TRIGGER saslgate_notify_throttle_truncate
    AFTER TRUNCATE ON throttle
    FOR EACH STATEMENT EXECUTE FUNCTION saslgate_notify_all();
CREATE TRIGGER saslgate_notify_throttle_rows
    AFTER INSERT OR UPDATE OR DELETE ON throttle
    FOR EACH ROW EXECUTE FUNCTION saslgate_notify_throttle();

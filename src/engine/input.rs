//! Step 1: a request validated and normalised ([`Input`]), and the ONE place
//! a login name becomes an account ([`resolve_account`]).

use super::tickets;
use crate::config::Config;
use crate::decision::Request;
use crate::names;
use crate::store::types::AccountRow;
use crate::store::LoginStore;

/// A request after validation and normalisation (step 1).
pub(super) struct Input {
    /// Account names the login may be, most specific first (see
    /// [`names::login_candidates`] for the realm rule).
    pub(super) candidates: Vec<String>,
    pub(super) service: String,
    pub(super) addr: Option<std::net::IpAddr>,
    /// A `tls_required` service over a connection the face knows is plain.
    pub(super) tls_missing: bool,
    /// Where the mail server received the connection (proxy tickets).
    pub(super) local: Option<std::net::SocketAddr>,
}

impl Input {
    pub(super) fn parse(req: &Request<'_>, config: &Config) -> Result<Input, names::FieldError> {
        let login = names::text_field("login", req.login, names::MAX_LOGIN)?;
        let realm = match req.realm {
            Some(r) if !r.is_empty() => Some(names::text_field("realm", r, names::MAX_NAME)?),
            _ => None,
        };
        let service = names::text_field("service", req.service, names::MAX_NAME)?;
        let service = names::service_name(service, &config.service_aliases)?;
        names::password_field(req.password)?;
        let candidates = names::login_candidates(login, realm, |r| config.is_local_realm(r))?;
        let addr = req.client_addr.and_then(names::parse_client_addr);
        let tls_missing = req.secure == Some(false) && config.requires_tls(&service);
        let local = req.local_addr.and_then(tickets::parse_backend);
        Ok(Input {
            candidates,
            service,
            addr,
            tls_missing,
            local,
        })
    }
}

/// What a login name resolved to.
pub(crate) struct Resolved {
    pub(crate) account: Option<AccountRow>,
    /// The name to throttle, audit and answer under: the account's canonical
    /// name, else the first candidate.
    pub(crate) name: String,
    /// The candidate that was a login alias of the account, if it was one.
    pub(crate) alias: Option<String>,
}

/// The ONE place a login name becomes an account: for each candidate
/// (`alice@realm`, then `alice` where the realm is local), an account of
/// that name, else the account it is an alias of (one namespace: a name is
/// never both).
pub(crate) fn resolve_account(
    store: &dyn LoginStore,
    candidates: &[String],
) -> crate::Result<Resolved> {
    for candidate in candidates {
        if let Some(a) = store.find_account(candidate)? {
            return Ok(Resolved {
                name: a.name.clone(),
                account: Some(a),
                alias: None,
            });
        }
        if let Some(a) = store.find_alias(candidate)? {
            return Ok(Resolved {
                name: a.name.clone(),
                account: Some(a),
                alias: Some(candidate.clone()),
            });
        }
    }
    Ok(Resolved {
        account: None,
        name: candidates[0].clone(),
        alias: None,
    })
}

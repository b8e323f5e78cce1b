//! `saslgate alias` (login aliases) and `saslgate block` (the address block
//! list): their shape and what they do.

use super::{json, opt_text, out};
use crate::error::Result;
use crate::store::AdminStore;
use crate::timefmt;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub(super) enum AliasCmd {
    /// Let ACCOUNT also log in as ALIAS (it logs in, is throttled and
    /// audited as ACCOUNT; never the name of another account).
    Add { account: String, alias: String },
    /// Every alias, or one account's.
    List { account: Option<String> },
    /// Remove an alias (the account keeps its own name).
    Remove { alias: String },
}

#[derive(Subcommand, Debug)]
pub(super) enum BlockCmd {
    /// Refuse every login from an address or network (192.0.2.7,
    /// 198.51.100.0/24, 2001:db8::/32) on every face, before any check.
    Add {
        network: String,
        /// Why (shown by `block list`).
        #[arg(long)]
        note: Option<String>,
    },
    /// Remove an address or network from the block list.
    Remove { network: String },
    /// Every blocked address or network, with its reason.
    List,
}

pub(super) fn alias(store: &mut dyn AdminStore, cmd: AliasCmd, as_json: bool) -> Result<()> {
    match cmd {
        AliasCmd::Add { account, alias } => {
            let alias = store.add_alias(&account, &alias)?;
            eprintln!("saslgate: {alias} now logs in as {account}");
        }
        AliasCmd::Remove { alias } => {
            store.remove_alias(&alias)?;
            eprintln!("saslgate: removed alias {alias}");
        }
        AliasCmd::List { account } => {
            let list = store.list_aliases(account.as_deref())?;
            if as_json {
                json(&list)?;
            } else {
                for a in list {
                    out(&format!(
                        "{:<32} -> {:<32} {}",
                        a.alias,
                        a.account,
                        timefmt::format(a.created)
                    ))?;
                }
            }
        }
    }
    Ok(())
}

pub(super) fn block(store: &mut dyn AdminStore, cmd: BlockCmd, as_json: bool) -> Result<()> {
    match cmd {
        BlockCmd::Add { network, note } => {
            let stored = store.add_block(&network, note.as_deref())?;
            eprintln!("saslgate: blocked {stored}");
        }
        BlockCmd::Remove { network } => {
            let stored = store.remove_block(&network)?;
            eprintln!("saslgate: unblocked {stored}");
        }
        BlockCmd::List => {
            let list = store.list_blocks()?;
            if as_json {
                json(&list)?;
            } else {
                for b in list {
                    out(&format!(
                        "{:<43} {} {}",
                        b.network,
                        timefmt::format(b.created),
                        opt_text(b.note.as_deref())
                    ))?;
                }
            }
        }
    }
    Ok(())
}

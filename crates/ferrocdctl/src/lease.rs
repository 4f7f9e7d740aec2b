//! lease grant, revoke, timetolive, list and keep-alive.

use clap::{ArgAction, Subcommand};

use crate::print::Format;
use crate::{CtlError, CtlResult, Ctx, exit, go};

#[derive(Debug, Subcommand)]
pub enum LeaseCommand {
    /// Creates leases
    Grant { args: Vec<String> },
    /// Revokes leases
    Revoke { args: Vec<String> },
    /// Get lease information
    Timetolive {
        /// Get keys attached to this lease
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
        keys: bool,
        args: Vec<String>,
    },
    /// List all active leases
    List,
    /// Keeps leases alive (renew)
    KeepAlive {
        /// Resets the keep-alive time to its original value and exits immediately
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
        once: bool,
        args: Vec<String>,
    },
}

fn lease_id(arg: &str) -> Result<i64, CtlError> {
    go::parse_int(arg, 16).map_err(|e| CtlError::bad_args(format!("bad lease ID arg ({e}), expecting ID in Hex")))
}

fn one(args: &[String], message: &str) -> Result<String, CtlError> {
    match args {
        [one] => Ok(one.clone()),
        _ => Err(CtlError::bad_args(message)),
    }
}

pub async fn run(ctx: &Ctx, command: LeaseCommand) -> CtlResult {
    match command {
        LeaseCommand::Grant { args } => {
            let ttl = one(&args, "lease grant command needs TTL argument")?;
            let ttl = go::parse_int(&ttl, 10).map_err(|e| CtlError::bad_args(format!("bad TTL ({e})")))?;
            let client = ctx.client().await?;
            let reply = client.lease_grant(ttl, None).await.map_err(|e| {
                CtlError::new(exit::ERROR, format!("failed to grant lease ({})", crate::client_message(&e)))
            })?;
            ctx.printer.grant(&reply)
        }
        LeaseCommand::Revoke { args } => {
            let id = lease_id(&one(&args, "lease revoke command needs 1 argument")?)?;
            let client = ctx.client().await?;
            let reply = client.lease_revoke(id).await.map_err(|e| {
                CtlError::new(exit::ERROR, format!("failed to revoke lease ({})", crate::client_message(&e)))
            })?;
            ctx.printer.revoke(id, &reply)
        }
        LeaseCommand::Timetolive { keys, args } => {
            let id = lease_id(&one(&args, "lease timetolive command needs lease ID as argument")?)?;
            let client = ctx.client().await?;
            let reply =
                client.lease_time_to_live(id, keys).await.map_err(|e| CtlError::client(exit::BAD_CONNECTION, &e))?;
            ctx.printer.time_to_live(&reply, keys)
        }
        LeaseCommand::List => {
            let client = ctx.client().await?;
            let reply = client.lease_leases().await.map_err(|e| CtlError::client(exit::BAD_CONNECTION, &e))?;
            ctx.printer.leases(&reply)
        }
        LeaseCommand::KeepAlive { once, args } => {
            let id = lease_id(&one(&args, "lease keep-alive command needs lease ID as argument")?)?;
            let client = ctx.client().await?;
            if once {
                let reply = client
                    .lease_keep_alive_response(id)
                    .await
                    .map_err(|e| CtlError::client(exit::BAD_CONNECTION, &e))?;
                return ctx.printer.keep_alive(&reply);
            }
            // Renew every third of the TTL and print each renewal, as etcdctl does, until
            // the lease is gone.
            loop {
                match client.lease_keep_alive_response(id).await {
                    Ok(reply) => {
                        ctx.printer.keep_alive(&reply)?;
                        let wait = u64::try_from(reply.ttl / 3).unwrap_or(0).max(1);
                        tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
                    }
                    Err(ferrocd_client::Error::LeaseExpired { .. }) => break,
                    Err(e) if e.etcd().is_some() => break,
                    Err(e) => return Err(CtlError::client(exit::BAD_CONNECTION, &e)),
                }
            }
            if ctx.printer.format == Format::Simple {
                println!("lease {id:016x} expired or revoked.");
            }
            Ok(())
        }
    }
}

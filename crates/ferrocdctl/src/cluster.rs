//! member, endpoint, alarm, defrag, move-leader, snapshot save, lock and elect.

use std::path::Path;
use std::time::{Duration, Instant};

use clap::{ArgAction, Args, Subcommand};
use ferrocd_client::Client;
use ferrocd_client::proto::alarm_request::AlarmAction;
use ferrocd_client::proto::{AlarmResponse, AlarmType, RangeResponse};

use crate::print::{Format, Health};
use crate::progress::Progress;
use crate::{CtlError, CtlResult, Ctx, exit, go};

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Adds a member into the cluster
    Add {
        /// comma separated peer URLs for the new member.
        #[arg(long = "peer-urls", default_value = "")]
        peer_urls: String,
        /// indicates if the new member is raft learner
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
        learner: bool,
        args: Vec<String>,
    },
    /// Removes a member from the cluster
    Remove { args: Vec<String> },
    /// Updates a member in the cluster
    Update {
        /// comma separated peer URLs for the updated member.
        #[arg(long = "peer-urls", default_value = "")]
        peer_urls: String,
        args: Vec<String>,
    },
    /// Lists all members in the cluster
    List,
    /// Promotes a non-voting member in the cluster
    Promote { args: Vec<String> },
}

fn member_id(args: &[String]) -> Result<u64, CtlError> {
    let [id] = args else { return Err(CtlError::bad_args("member ID is not provided")) };
    go::parse_uint(id, 16).map_err(|e| CtlError::bad_args(format!("bad member ID arg ({e}), expecting ID in Hex")))
}

fn failed(e: &ferrocd_client::Error) -> CtlError {
    CtlError::client(exit::ERROR, e)
}

pub async fn member(ctx: &Ctx, command: MemberCommand) -> CtlResult {
    match command {
        MemberCommand::Add { peer_urls, learner, args } => {
            let name = match args.as_slice() {
                [] => return Err(CtlError::bad_args("member name not provided")),
                [name] => name.clone(),
                _ => {
                    let mut message = String::from("too many arguments");
                    for s in args.iter().filter(|s| s.to_lowercase().starts_with("http")) {
                        message += &format!(", did you mean --peer-urls={s}");
                    }
                    return Err(CtlError::bad_args(message));
                }
            };
            if peer_urls.is_empty() {
                return Err(CtlError::bad_args("member peer urls not provided"));
            }
            let urls: Vec<&str> = peer_urls.split(',').collect();
            let reply = ctx.client().await?.member_add(urls, learner).await.map_err(|e| failed(&e))?;
            ctx.printer.member_add(&reply)?;
            if ctx.printer.format == Format::Simple {
                let new_id = reply.member.as_ref().map_or(0, |m| m.id);
                let mut conf = Vec::new();
                for m in &reply.members {
                    for u in &m.peer_ur_ls {
                        let n = if m.id == new_id { &name } else { &m.name };
                        conf.push(format!("{n}={u}"));
                    }
                }
                println!(
                    "\nETCD_NAME={}\nETCD_INITIAL_CLUSTER={}\nETCD_INITIAL_ADVERTISE_PEER_URLS={}\nETCD_INITIAL_CLUSTER_STATE=\"existing\"",
                    go::quote(name.as_bytes()),
                    go::quote(conf.join(",").as_bytes()),
                    go::quote(peer_urls.as_bytes())
                );
            }
            Ok(())
        }
        MemberCommand::Remove { args } => {
            let id = member_id(&args)?;
            let reply = ctx.client().await?.member_remove(id).await.map_err(|e| failed(&e))?;
            ctx.printer.member_changed("removed from", id, reply.header.as_ref(), &reply.members, &reply)
        }
        MemberCommand::Update { peer_urls, args } => {
            let id = member_id(&args)?;
            if peer_urls.is_empty() {
                return Err(CtlError::bad_args("member peer urls not provided"));
            }
            let urls: Vec<&str> = peer_urls.split(',').collect();
            let reply = ctx.client().await?.member_update(id, urls).await.map_err(|e| failed(&e))?;
            ctx.printer.member_changed("updated in", id, reply.header.as_ref(), &reply.members, &reply)
        }
        MemberCommand::List => {
            let reply = ctx.client().await?.member_list(true).await.map_err(|e| failed(&e))?;
            ctx.printer.member_list(&reply)
        }
        MemberCommand::Promote { args } => {
            let id = member_id(&args)?;
            let reply = ctx.client().await?.member_promote(id).await.map_err(|e| failed(&e))?;
            ctx.printer.member_changed("promoted in", id, reply.header.as_ref(), &reply.members, &reply)
        }
    }
}

#[derive(Debug, Args)]
pub struct EndpointArgs {
    /// use all endpoints from the cluster member list
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    cluster: bool,
    #[command(subcommand)]
    command: EndpointCommand,
}

#[derive(Debug, Subcommand)]
enum EndpointCommand {
    /// Checks the healthiness of endpoints specified in `--endpoints` flag
    Health,
    /// Prints out the status of endpoints specified in `--endpoints` flag
    Status,
    /// Prints the KV history hash for each endpoint in --endpoints
    Hashkv {
        /// maximum revision to hash (default: all revisions)
        #[arg(long, default_value_t = 0)]
        rev: i64,
    },
}

/// The endpoints to visit: those given, or with `--cluster` every member's client URLs.
async fn endpoints(ctx: &Ctx, cluster: bool) -> Result<Vec<String>, CtlError> {
    if !cluster {
        return Ok(ctx.endpoints());
    }
    let members = ctx.client().await?.member_list(true).await.map_err(|e| {
        CtlError::new(
            exit::ERROR,
            format!("failed to fetch endpoints from etcd cluster member list: {}", crate::client_message(&e)),
        )
    })?;
    Ok(members.members.into_iter().flat_map(|m| m.client_ur_ls).collect())
}

pub async fn endpoint(ctx: &Ctx, args: EndpointArgs) -> CtlResult {
    let eps = endpoints(ctx, args.cluster).await?;
    match args.command {
        EndpointCommand::Health => {
            let checks = eps.iter().map(|ep| async move {
                let mut health =
                    Health { endpoint: ep.clone(), health: false, took: String::new(), error: String::new() };
                let client = match ctx.client_of(std::slice::from_ref(ep)).await {
                    Ok(c) => c,
                    Err(e) => {
                        health.error = e.message;
                        return health;
                    }
                };
                let start = Instant::now();
                let result = client.get("health", None).await;
                health.took = go::duration(start.elapsed());
                match result {
                    Ok(_) => health.health = true,
                    Err(e) if e.etcd() == Some(ferrocd_client::EtcdError::PermissionDenied) => health.health = true,
                    Err(e) => health.error = crate::client_message(&e),
                }
                health
            });
            let list = join_all(checks).await;
            ctx.printer.endpoint_health(&list)?;
            if list.iter().any(|h| !h.error.is_empty()) {
                return Err(CtlError::new(exit::ERROR, "unhealthy cluster"));
            }
            Ok(())
        }
        EndpointCommand::Status => {
            let client = ctx.client_of(&eps).await?;
            let mut list = Vec::new();
            let mut failed = false;
            for ep in &eps {
                match client.status(ep).await {
                    Ok(s) => list.push((ep.clone(), s)),
                    Err(e) => {
                        failed = true;
                        eprintln!("Failed to get the status of endpoint {ep} ({})", crate::client_message(&e));
                    }
                }
            }
            ctx.printer.endpoint_status(&list)?;
            if failed { Err(CtlError::new(exit::ERROR, "")) } else { Ok(()) }
        }
        EndpointCommand::Hashkv { rev } => {
            let client = ctx.client_of(&eps).await?;
            let mut list = Vec::new();
            let mut last = None;
            for ep in &eps {
                match client.hash_kv(ep, rev).await {
                    Ok(h) => list.push((ep.clone(), h)),
                    Err(e) => {
                        eprintln!("Failed to get the hash of endpoint {ep} ({})", crate::client_message(&e));
                        last = Some(e);
                    }
                }
            }
            ctx.printer.endpoint_hash_kv(&list)?;
            match last {
                Some(e) => Err(failed(&e)),
                None => Ok(()),
            }
        }
    }
}

async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    let pinned: Vec<_> = futures.map(Box::pin).collect();
    for f in pinned {
        out.push(f.await);
    }
    out
}

#[derive(Debug, Subcommand)]
pub enum AlarmCommand {
    /// Disarms all alarms
    Disarm { args: Vec<String> },
    /// Lists all alarms
    List { args: Vec<String> },
}

pub async fn alarm(ctx: &Ctx, command: AlarmCommand) -> CtlResult {
    match command {
        AlarmCommand::List { args } => {
            if !args.is_empty() {
                return Err(CtlError::bad_args("alarm list command accepts no arguments"));
            }
            let client = ctx.client().await?;
            let reply = client.alarm_response(AlarmAction::Get, AlarmType::None, 0).await.map_err(|e| failed(&e))?;
            ctx.printer.alarm(&reply)
        }
        AlarmCommand::Disarm { args } => {
            if !args.is_empty() {
                return Err(CtlError::bad_args("alarm disarm command accepts no arguments"));
            }
            let client = ctx.client().await?;
            let list = client.alarm_response(AlarmAction::Get, AlarmType::None, 0).await.map_err(|e| failed(&e))?;
            let mut disarmed = AlarmResponse::default();
            for a in list.alarms {
                let alarm = AlarmType::try_from(a.alarm).unwrap_or(AlarmType::None);
                let reply =
                    client.alarm_response(AlarmAction::Deactivate, alarm, a.member_id).await.map_err(|e| failed(&e))?;
                disarmed.alarms.extend(reply.alarms);
            }
            ctx.printer.alarm(&disarmed)
        }
    }
}

#[derive(Debug, Args)]
pub struct DefragArgs {
    /// use all endpoints from the cluster member list
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    cluster: bool,
}

pub async fn defrag(ctx: &Ctx, args: DefragArgs) -> CtlResult {
    let eps = endpoints(ctx, args.cluster).await?;
    let client = ctx.client_of(&eps).await?;
    let mut failures = false;
    for ep in &eps {
        match client.defragment(ep).await {
            Ok(_) => println!("Finished defragmenting etcd member[{ep}]"),
            Err(e) => {
                failures = true;
                eprintln!("Failed to defragment etcd member[{ep}] ({})", crate::client_message(&e));
            }
        }
    }
    if failures { Err(CtlError::new(exit::ERROR, "")) } else { Ok(()) }
}

#[derive(Debug, Args)]
pub struct MoveLeaderArgs {
    args: Vec<String>,
}

pub async fn move_leader(ctx: &Ctx, args: MoveLeaderArgs) -> CtlResult {
    let [target] = args.args.as_slice() else {
        return Err(CtlError::bad_args("move-leader command needs 1 argument"));
    };
    let target = go::parse_uint(target, 16).map_err(CtlError::bad_args)?;
    let eps = ctx.endpoints();
    for ep in &eps {
        let client = ctx.client_of(std::slice::from_ref(ep)).await?;
        let status = client.status(ep).await.map_err(|e| failed(&e))?;
        if status.header.as_ref().is_some_and(|h| h.member_id == status.leader) {
            let reply = client.move_leader(ep, target).await.map_err(|e| failed(&e))?;
            return ctx.printer.move_leader(status.leader, target, &reply);
        }
    }
    Err(CtlError::bad_args(format!("no leader endpoint given at [{}]", eps.join(" "))))
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Stores an etcd node backend snapshot to a given file
    Save { args: Vec<String> },
}

pub async fn snapshot(ctx: &Ctx, command: SnapshotCommand) -> CtlResult {
    let SnapshotCommand::Save { args } = command;
    let [path] = args.as_slice() else {
        return Err(CtlError::bad_args("snapshot save expects one argument"));
    };
    let eps = ctx.endpoints();
    let [ep] = eps.as_slice() else {
        return Err(CtlError::bad_args(format!(
            "snapshot must be requested to one selected node, not multiple [{}]",
            eps.join(" ")
        )));
    };
    let client = ctx.client().await?;
    let bar = Progress::new();
    let line = |bytes: u64, elapsed: Duration| {
        let rate = go::human_bytes((bytes as f64 / elapsed.as_secs_f64().max(1e-3)) as u64);
        format!("Saving snapshot: {} ({rate}/s)", go::human_bytes(bytes))
    };
    let saved = client
        .snapshot_to_file(ep, Path::new(path), |n| bar.show(|t| line(n, t)))
        .await
        .map_err(|e| CtlError::client(exit::INTERRUPTED, &e))?;
    bar.show(|t| line(saved, t));
    bar.finish();
    println!("Snapshot saved at {path}");
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A session lease of `ttl` seconds kept alive while the returned keeper lives.
async fn session(client: &Client, ttl: i64) -> Result<ferrocd_client::lease::LeaseKeeper, CtlError> {
    let lease = client.lease_grant(ttl, None).await.map_err(|e| failed(&e))?;
    client.lease_keep_alive(lease.id).await.map_err(|e| failed(&e))
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// timeout for session
    #[arg(long, default_value_t = 10)]
    ttl: i64,
    /// the lock name, then an optional command to run while holding it
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub async fn lock(ctx: &Ctx, args: LockArgs) -> CtlResult {
    let Some((name, command)) = args.args.split_first() else {
        return Err(CtlError::bad_args("lock takes a lock name argument and an optional command to execute"));
    };
    let client = ctx.client().await?;
    let keeper = session(&client, args.ttl).await?;
    let locked = tokio::select! {
        locked = client.lock(name, Some(keeper.id())) => locked.map_err(|e| failed(&e))?,
        () = interrupted() => return Err(CtlError::new(exit::ERROR, "context canceled")),
    };
    if let Some((program, rest)) = command.split_first() {
        let revision = locked.header.as_ref().map_or(0, |h| h.revision);
        let status = tokio::process::Command::new(program)
            .args(rest)
            .env("ETCD_LOCK_KEY", String::from_utf8_lossy(&locked.key).as_ref())
            .env("ETCD_LOCK_REV", revision.to_string())
            .status()
            .await;
        let unlocked = client.unlock(locked.key.clone()).await;
        let status = status.map_err(|e| CtlError::new(exit::ERROR, e.to_string()))?;
        unlocked.map_err(|e| failed(&e))?;
        return match status.code() {
            Some(0) => Ok(()),
            _ => Err(CtlError::new(exit::ERROR, format!("{status}"))),
        };
    }
    let held = client.get(locked.key.clone(), None).await.map_err(|e| failed(&e))?;
    if held.kvs.is_empty() {
        return Err(CtlError::new(exit::ERROR, "lock lost on init"));
    }
    ctx.printer.get(&held)?;
    interrupted().await;
    client.unlock(locked.key).await.map_err(|e| failed(&e))?;
    drop(keeper);
    Ok(())
}

#[derive(Debug, Args)]
pub struct ElectArgs {
    /// observation mode
    #[arg(short = 'l', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    listen: bool,
    args: Vec<String>,
}

pub async fn elect(ctx: &Ctx, args: ElectArgs) -> CtlResult {
    if args.args.is_empty() || args.args.len() > 2 {
        return Err(CtlError::bad_args("elect takes one election name argument and an optional proposal argument."));
    }
    let name = args.args[0].clone();
    let client = ctx.client().await?;
    if args.listen {
        let mut leaders = client.observe(name);
        loop {
            tokio::select! {
                next = leaders.recv() => match next {
                    Some(Ok(leader)) => {
                        let reply = RangeResponse { header: leader.header, kvs: leader.kv.into_iter().collect(), more: false, count: 1 };
                        ctx.printer.get(&reply)?;
                    }
                    Some(Err(e)) => return Err(failed(&e)),
                    None => return Err(CtlError::new(exit::ERROR, "observe: unexpected end of stream")),
                },
                () = interrupted() => return Ok(()),
            }
        }
    }
    let Some(proposal) = args.args.get(1) else {
        return Err(CtlError::bad_args("no proposal argument but -l not set"));
    };
    let keeper = session(&client, 60).await?;
    let campaign = tokio::select! {
        c = client.campaign(name, proposal.as_bytes(), Some(keeper.id())) => c.map_err(|e| failed(&e))?,
        () = interrupted() => return Err(CtlError::new(exit::ERROR, "context canceled")),
    };
    let leader = campaign.leader.unwrap_or_default();
    let held = client.get(leader.key.clone(), None).await.map_err(|e| failed(&e))?;
    ctx.printer.get(&held)?;
    interrupted().await;
    client.resign(&leader).await.map_err(|e| failed(&e))?;
    drop(keeper);
    Ok(())
}

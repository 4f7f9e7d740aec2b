//! auth, user and role.

use std::io::BufRead;

use clap::{ArgAction, Args, Subcommand};
use ferrocd_client::auth::PermissionType;
use ferrocd_client::kv::prefix_range_end;

use crate::{CtlError, CtlResult, Ctx, exit};

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Enables authentication
    Enable { args: Vec<String> },
    /// Disables authentication
    Disable { args: Vec<String> },
    /// Returns authentication status
    Status { args: Vec<String> },
}

fn failed(e: &ferrocd_client::Error) -> CtlError {
    CtlError::client(exit::ERROR, e)
}

pub async fn auth(ctx: &Ctx, command: AuthCommand) -> CtlResult {
    match command {
        AuthCommand::Enable { args } => {
            if !args.is_empty() {
                return Err(CtlError::bad_args("auth enable command does not accept any arguments"));
            }
            let client = ctx.client().await?;
            loop {
                match client.auth_enable().await {
                    Ok(_) => break,
                    Err(e) if e.etcd() == Some(ferrocd_client::EtcdError::RootRoleNotExist) => {
                        client.role_add("root").await.map_err(|e| failed(&e))?;
                        client.user_grant_role("root", "root").await.map_err(|e| failed(&e))?;
                    }
                    Err(e) => return Err(failed(&e)),
                }
            }
            println!("Authentication Enabled");
            Ok(())
        }
        AuthCommand::Disable { args } => {
            if !args.is_empty() {
                return Err(CtlError::bad_args("auth disable command does not accept any arguments"));
            }
            ctx.client().await?.auth_disable().await.map_err(|e| failed(&e))?;
            println!("Authentication Disabled");
            Ok(())
        }
        AuthCommand::Status { args } => {
            if !args.is_empty() {
                return Err(CtlError::bad_args("auth status command does not accept any arguments"));
            }
            let status = ctx.client().await?.auth_status().await.map_err(|e| failed(&e))?;
            println!("Authentication Status: {}\nAuthRevision: {}", status.enabled, status.auth_revision);
            Ok(())
        }
    }
}

#[derive(Debug, Args)]
pub struct PasswordFlags {
    /// Read password from stdin instead of interactive terminal
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = true, action = ArgAction::Set)]
    interactive: bool,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Adds a new user
    Add {
        #[command(flatten)]
        password: PasswordFlags,
        /// Supply password from the command line flag
        #[arg(long = "new-user-password", default_value = "")]
        new_user_password: String,
        /// Create a user without password (CN based auth only)
        #[arg(long = "no-password", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
        no_password: bool,
        args: Vec<String>,
    },
    /// Deletes a user
    Delete { args: Vec<String> },
    /// Gets detailed information of a user
    Get {
        /// Show permissions of roles granted to the user
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
        detail: bool,
        args: Vec<String>,
    },
    /// Lists all users
    List { args: Vec<String> },
    /// Changes password of user
    Passwd {
        #[command(flatten)]
        password: PasswordFlags,
        args: Vec<String>,
    },
    /// Grants a role to a user
    GrantRole { args: Vec<String> },
    /// Revokes a role from a user
    RevokeRole { args: Vec<String> },
}

/// A password: one whitespace-free word from stdin, or asked twice on the terminal.
fn read_password(user: &str, interactive: bool) -> Result<String, CtlError> {
    if !interactive {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map_err(|e| CtlError::io(&e))?;
        return Ok(line.split_whitespace().next().unwrap_or_default().to_string());
    }
    let ask = |prompt: String| {
        rpassword::prompt_password(prompt).map_err(|e| CtlError::bad_args(format!("failed to ask password: {e}")))
    };
    let first = ask(format!("Password of {user}: "))?;
    if first.is_empty() {
        return Err(CtlError::bad_args("empty password"));
    }
    let second = ask(format!("Type password of {user} again for confirmation: "))?;
    if first != second {
        return Err(CtlError::bad_args("given passwords are different"));
    }
    Ok(first)
}

fn one<'a>(args: &'a [String], message: &str) -> Result<&'a str, CtlError> {
    match args {
        [one] => Ok(one),
        _ => Err(CtlError::bad_args(message)),
    }
}

pub async fn user(ctx: &Ctx, command: UserCommand) -> CtlResult {
    let p = &ctx.printer;
    match command {
        UserCommand::Add { password, new_user_password, no_password, args } => {
            let arg = one(&args, "user add command requires user name as its argument")?;
            let (name, secret) = if no_password {
                (arg.to_string(), None)
            } else if !new_user_password.is_empty() {
                (arg.to_string(), Some(new_user_password))
            } else if let Some((name, secret)) = arg.split_once(':') {
                if name.is_empty() {
                    return Err(CtlError::bad_args("empty user name is not allowed"));
                }
                (name.to_string(), Some(secret.to_string()))
            } else {
                (arg.to_string(), Some(read_password(arg, password.interactive)?))
            };
            let client = ctx.client().await?;
            let reply = match &secret {
                Some(secret) => client.user_add(&name, secret).await,
                None => client.user_add_no_password(&name).await,
            }
            .map_err(|e| failed(&e))?;
            p.auth_change(format!("User {name} created"), reply.header.as_ref(), &reply)
        }
        UserCommand::Delete { args } => {
            let name = one(&args, "user delete command requires user name as its argument")?;
            let reply = ctx.client().await?.user_delete(name).await.map_err(|e| failed(&e))?;
            p.auth_change(format!("User {name} deleted"), reply.header.as_ref(), &reply)
        }
        UserCommand::Get { detail, args } => {
            let name = one(&args, "user get command requires user name as its argument")?;
            let client = ctx.client().await?;
            let reply = client.user_get(name).await.map_err(|e| failed(&e))?;
            if !detail {
                return p.user_get(name, &reply);
            }
            println!("User: {name}");
            for role in &reply.roles {
                println!();
                let role_reply = client.role_get(role).await.map_err(|e| failed(&e))?;
                p.role_get(role, &role_reply)?;
            }
            Ok(())
        }
        UserCommand::List { args } => {
            if !args.is_empty() {
                return Err(CtlError::bad_args("user list command requires no arguments"));
            }
            let reply = ctx.client().await?.user_list().await.map_err(|e| failed(&e))?;
            p.names(reply.header.as_ref(), "users", &reply.users, &reply)
        }
        UserCommand::Passwd { password, args } => {
            let name = one(&args, "user passwd command requires user name as its argument")?;
            let secret = read_password(name, password.interactive)?;
            let reply = ctx.client().await?.user_change_password(name, &secret).await.map_err(|e| failed(&e))?;
            p.auth_change("Password updated".into(), reply.header.as_ref(), &reply)
        }
        UserCommand::GrantRole { args } => {
            let [user, role] = args.as_slice() else {
                return Err(CtlError::bad_args("user grant command requires user name and role name as its argument"));
            };
            let reply = ctx.client().await?.user_grant_role(user, role).await.map_err(|e| failed(&e))?;
            p.auth_change(format!("Role {role} is granted to user {user}"), reply.header.as_ref(), &reply)
        }
        UserCommand::RevokeRole { args } => {
            let [user, role] = args.as_slice() else {
                return Err(CtlError::bad_args("user revoke-role requires user name and role name as its argument"));
            };
            let reply = ctx.client().await?.user_revoke_role(user, role).await.map_err(|e| failed(&e))?;
            p.auth_change(format!("Role {role} is revoked from user {user}"), reply.header.as_ref(), &reply)
        }
    }
}

#[derive(Debug, Args)]
pub struct PermFlags {
    /// a prefix permission
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    prefix: bool,
    /// a permission of keys that are greater than or equal to the given key using byte compare
    #[arg(long = "from-key", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value_t = false, action = ArgAction::Set)]
    from_key: bool,
}

#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Adds a new role
    Add { args: Vec<String> },
    /// Deletes a role
    Delete { args: Vec<String> },
    /// Gets detailed information of a role
    Get { args: Vec<String> },
    /// Lists all roles
    List { args: Vec<String> },
    /// Grants a key to a role
    GrantPermission {
        #[command(flatten)]
        flags: PermFlags,
        args: Vec<String>,
    },
    /// Revokes a key from a role
    RevokePermission {
        #[command(flatten)]
        flags: PermFlags,
        args: Vec<String>,
    },
}

const EXCLUSIVE: &str = "--from-key and --prefix flags are mutually exclusive";

/// etcdctl's `permRange`: the key and range end a permission's arguments and flags name.
fn perm_range(args: &[String], flags: &PermFlags) -> Result<(String, String), CtlError> {
    let key = &args[0];
    if key.is_empty() {
        if flags.prefix && flags.from_key {
            return Err(CtlError::bad_args(EXCLUSIVE));
        }
        let end = if flags.prefix || flags.from_key { "\0" } else { "" };
        return Ok(("\0".into(), end.into()));
    }
    let end = match (args.get(1), flags.prefix, flags.from_key) {
        (None, true, true) => return Err(CtlError::bad_args(EXCLUSIVE)),
        (None, true, false) => String::from_utf8_lossy(&prefix_range_end(key.as_bytes())).into_owned(),
        (None, false, true) => "\0".into(),
        (None, false, false) => String::new(),
        (Some(_), true, _) => return Err(CtlError::bad_args("unexpected endkey argument with --prefix flag")),
        (Some(_), _, true) => return Err(CtlError::bad_args("unexpected endkey argument with --from-key flag")),
        (Some(end), false, false) => end.clone(),
    };
    Ok((key.clone(), end))
}

pub async fn role(ctx: &Ctx, command: RoleCommand) -> CtlResult {
    let p = &ctx.printer;
    match command {
        RoleCommand::Add { args } => {
            let name = one(&args, "role add command requires role name as its argument")?;
            let reply = ctx.client().await?.role_add(name).await.map_err(|e| failed(&e))?;
            p.auth_change(format!("Role {name} created"), reply.header.as_ref(), &reply)
        }
        RoleCommand::Delete { args } => {
            let name = one(&args, "role delete command requires role name as its argument")?;
            let reply = ctx.client().await?.role_delete(name).await.map_err(|e| failed(&e))?;
            p.auth_change(format!("Role {name} deleted"), reply.header.as_ref(), &reply)
        }
        RoleCommand::Get { args } => {
            let name = one(&args, "role get command requires role name as its argument")?;
            let reply = ctx.client().await?.role_get(name).await.map_err(|e| failed(&e))?;
            p.role_get(name, &reply)
        }
        RoleCommand::List { args } => {
            if !args.is_empty() {
                return Err(CtlError::bad_args("role list command requires no arguments"));
            }
            let reply = ctx.client().await?.role_list().await.map_err(|e| failed(&e))?;
            p.names(reply.header.as_ref(), "roles", &reply.roles, &reply)
        }
        RoleCommand::GrantPermission { flags, args } => {
            if args.len() < 3 {
                return Err(CtlError::bad_args(
                    "role grant command requires role name, permission type, and key [endkey] as its argument",
                ));
            }
            let kind = PermissionType::from_str_name(&args[1].to_uppercase())
                .ok_or_else(|| CtlError::bad_args(format!("invalid permission type: {}", args[1])))?;
            let (key, end) = perm_range(&args[2..], &flags)?;
            let end = (!end.is_empty()).then_some(end.as_str());
            let reply =
                ctx.client().await?.role_grant_permission(&args[0], kind, &key, end).await.map_err(|e| failed(&e))?;
            p.auth_change(format!("Role {} updated", args[0]), reply.header.as_ref(), &reply)
        }
        RoleCommand::RevokePermission { flags, args } => {
            if args.len() < 2 {
                return Err(CtlError::bad_args(
                    "role revoke-permission command requires role name and key [endkey] as its argument",
                ));
            }
            let (key, end) = perm_range(&args[1..], &flags)?;
            let range = (!end.is_empty()).then_some(end.as_str());
            let reply =
                ctx.client().await?.role_revoke_permission(&args[0], &key, range).await.map_err(|e| failed(&e))?;
            let (role, shown) = (&args[0], &args[1]);
            let simple = if end.is_empty() {
                format!("Permission of key {shown} is revoked from role {role}")
            } else if end == "\0" {
                format!("Permission of range [{shown}, <open ended> is revoked from role {role}")
            } else {
                format!("Permission of range [{shown}, {end}) is revoked from role {role}")
            };
            p.auth_change(simple, reply.header.as_ref(), &reply)
        }
    }
}

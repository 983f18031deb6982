//! `kiln accounts`, `kiln tokens` and `kiln usage`: the operator's side of the platform. They
//! work on the same SQLite file as a running server, which picks changes up on its next request.

use clap::{Args, Subcommand};
use kiln_accounts::{AccountStore, Plan, Scope, SystemClock, UsageFilter, UsageLedger};
use std::sync::Arc;

use crate::ServeConfig;

#[derive(Subcommand)]
pub enum AccountsCommand {
    /// Create an account (prints its id).
    Create {
        /// A display name.
        #[arg(long, default_value = "default")]
        name: String,
        /// Its id (32 hex characters are generated when omitted); the id in API paths.
        #[arg(long)]
        id: Option<String>,
        /// `free` (10,000 neurons a day, then 429/3036) or `paid` (counted, never refused).
        #[arg(long, default_value = "free")]
        plan: Plan,
        #[command(flatten)]
        config: ServeConfig,
    },
    /// List accounts.
    List {
        #[command(flatten)]
        config: ServeConfig,
    },
    /// Change an account's plan.
    SetPlan {
        id: String,
        plan: Plan,
        #[command(flatten)]
        config: ServeConfig,
    },
}

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Create an API token; its secret is printed once and stored only as a hash.
    Create {
        #[arg(long)]
        account: String,
        /// Comma-separated: workers-ai:read, workers-ai:edit, ai-gateway:read, ai-gateway:edit,
        /// ai-gateway:run, vectorize:read, vectorize:edit, or `all`.
        #[arg(long, default_value = "workers-ai:read")]
        scope: String,
        #[arg(long, default_value = "api token")]
        name: String,
        #[command(flatten)]
        config: ServeConfig,
    },
    /// List tokens (never their secrets).
    List {
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        config: ServeConfig,
    },
    /// Revoke a token by its id; it stops working on the server's next request.
    Revoke {
        id: String,
        #[command(flatten)]
        config: ServeConfig,
    },
}

/// `kiln usage`: requests, tokens and neurons per UTC day, account and model.
#[derive(Args)]
pub struct UsageArgs {
    #[arg(long)]
    account: Option<String>,
    #[arg(long)]
    model: Option<String>,
    /// First day (YYYY-MM-DD, UTC).
    #[arg(long)]
    since: Option<String>,
    /// Last day (YYYY-MM-DD, UTC).
    #[arg(long)]
    until: Option<String>,
    /// Print JSON rows instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    config: ServeConfig,
}

fn open(config: ServeConfig) -> anyhow::Result<AccountStore> {
    let config = config.resolve()?;
    AccountStore::open_db(config.accounts_store()?, Arc::new(SystemClock))
        .map_err(|e| anyhow::anyhow!("{}", e.message))
}

pub fn accounts(command: AccountsCommand) -> anyhow::Result<()> {
    match command {
        AccountsCommand::Create {
            name,
            id,
            plan,
            config,
        } => {
            let account = open(config)?
                .create_account(id.as_deref(), &name, plan)
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            println!("{}", account.id);
        }
        AccountsCommand::List { config } => {
            let accounts = open(config)?
                .accounts()
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            println!("{:<34} {:<6} NAME", "ID", "PLAN");
            for account in accounts {
                println!("{:<34} {:<6} {}", account.id, account.plan, account.name);
            }
        }
        AccountsCommand::SetPlan { id, plan, config } => {
            open(config)?
                .set_plan(&id, plan)
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        }
    }
    Ok(())
}

pub fn tokens(command: TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::Create {
            account,
            scope,
            name,
            config,
        } => {
            let scopes = Scope::parse_list(&scope).map_err(|e| anyhow::anyhow!("{}", e.message))?;
            let (token, secret) = open(config)?
                .create_token(&account, &name, &scopes)
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            eprintln!(
                "token {} for account {} ({}); the secret below is shown only now:",
                token.id,
                token.account_id,
                scope_list(&token.scopes)
            );
            println!("{secret}");
        }
        TokensCommand::List { account, config } => {
            let tokens = open(config)?
                .tokens(account.as_deref())
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            println!(
                "{:<17} {:<34} {:<8} {:<20} SCOPES",
                "ID", "ACCOUNT", "STATE", "NAME"
            );
            for token in tokens {
                let state = if token.revoked { "revoked" } else { "active" };
                println!(
                    "{:<17} {:<34} {:<8} {:<20} {}",
                    token.id,
                    token.account_id,
                    state,
                    token.name,
                    scope_list(&token.scopes)
                );
            }
        }
        TokensCommand::Revoke { id, config } => {
            open(config)?
                .revoke_token(&id)
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        }
    }
    Ok(())
}

pub fn usage(args: UsageArgs) -> anyhow::Result<()> {
    let store = open(args.config)?;
    let ledger = UsageLedger::open(&store, Arc::new(SystemClock))
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let rows = ledger
        .report(UsageFilter {
            account_id: args.account,
            model: args.model,
            since_day: args.since,
            until_day: args.until,
        })
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<10} {:<34} {:<40} {:>8} {:>10} {:>10} {:>12}",
        "DAY", "ACCOUNT", "MODEL", "REQUESTS", "TOKENS IN", "TOKENS OUT", "NEURONS"
    );
    for row in rows {
        println!(
            "{:<10} {:<34} {:<40} {:>8} {:>10} {:>10} {:>12.3}",
            row.day,
            row.account_id,
            row.model,
            row.requests,
            row.input_tokens,
            row.output_tokens,
            row.neurons
        );
    }
    Ok(())
}

fn scope_list(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|scope| scope.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

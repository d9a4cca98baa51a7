//! `sluice user ...`: SCRAM users, like `kafka-configs.sh --entity-type users
//! --alter --add-config 'SCRAM-SHA-256=[password=...]'`. Over the Kafka protocol
//! (Describe/AlterUserScramCredentials, KIP-554) to a running broker, or, with `--data-dir`,
//! straight into a stopped broker's data directory: that is how the first user (a super
//! user) is made before any listener requires SASL.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::{kafka_error, print_json, Conn, Output};
use crate::auth::scram::{random_bytes, Credential, Mechanism};
use crate::auth::users::{Change, Users};

#[derive(clap::Subcommand, Debug)]
pub enum UserCmd {
    /// Create a user, or set a new password for one
    Create {
        name: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512 (PLAIN logins check against either)
        #[arg(long, default_value = "SCRAM-SHA-256")]
        mechanism: String,
        #[arg(long, default_value_t = 8192)]
        iterations: u32,
        /// The password (visible in `ps`; prefer --password-stdin or SLUICE_USER_PASSWORD)
        #[arg(long, env = "SLUICE_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// Read the password from the first line of standard input
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List users and their mechanisms
    List {
        #[command(flatten)]
        out: Output,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a user's credential for one mechanism, or for all of them
    Delete {
        name: String,
        #[arg(long)]
        mechanism: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(clap::Args, Debug)]
pub struct Target {
    /// Edit this (stopped) broker's data directory instead of asking a running broker
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    conn: Conn,
}

fn mechanism(name: &str) -> Result<Mechanism> {
    Mechanism::from_name(name)
        .with_context(|| format!("--mechanism {name}: use SCRAM-SHA-256 or SCRAM-SHA-512"))
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub async fn run(cmd: UserCmd) -> Result<()> {
    match cmd {
        UserCmd::Create {
            name,
            mechanism: m,
            iterations,
            password,
            password_stdin,
            target,
        } => {
            let mech = mechanism(&m)?;
            let password = match (password, password_stdin) {
                (_, true) => {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s)?;
                    s.lines().next().unwrap_or_default().to_string()
                }
                (Some(p), false) => p,
                (None, false) => bail!(
                    "give the password with --password-stdin, --password or SLUICE_USER_PASSWORD"
                ),
            };
            if password.is_empty() {
                bail!("the password is empty");
            }
            if !(crate::auth::scram::MIN_ITERATIONS..=crate::auth::scram::MAX_ITERATIONS)
                .contains(&iterations)
            {
                bail!("--iterations must be between 4096 and 16384");
            }
            if let Some(dir) = target.data_dir {
                // Before the first start, the directory may not exist yet.
                crate::disk::create_dir_all_durably(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                let users = Users::open(&dir)?;
                users.apply(&[Change::Upsert {
                    user: name.clone(),
                    mech,
                    credential: Credential::new(mech, &password, iterations)?,
                }])?;
                println!(
                    "user {name}: {} credential written to {}",
                    mech.name(),
                    dir.display()
                );
                return Ok(());
            }
            // The password never leaves this process: the broker gets the salted form.
            let salt = random_bytes(24)?;
            let salted = mech.salted_password(password.as_bytes(), &salt, iterations);
            let req = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
                ScramCredentialUpsertion::default()
                    .with_name(sb(&name))
                    .with_mechanism(mech.code())
                    .with_iterations(iterations as i32)
                    .with_salt(salt.into())
                    .with_salted_password(salted.into()),
            ]);
            alter(&target.conn, req).await?;
            println!("user {name}: {} credential set", mech.name());
        }
        UserCmd::List { out, target } => {
            let users = match target.data_dir {
                Some(dir) => Users::open(&dir)?
                    .describe()
                    .into_iter()
                    .map(|(u, ms)| {
                        (
                            u,
                            ms.into_iter()
                                .map(|(m, i)| (m.name().to_string(), i))
                                .collect(),
                        )
                    })
                    .collect::<Vec<(String, Vec<(String, u32)>)>>(),
                None => {
                    let mut c = target.conn.connect().await?;
                    let r = c
                        .call(
                            &DescribeUserScramCredentialsRequest::default().with_users(None),
                            0,
                        )
                        .await?;
                    if r.error_code != 0 {
                        bail!("{}", kafka_error(r.error_code, r.error_message.as_deref()));
                    }
                    r.results
                        .iter()
                        .map(|u| {
                            let ms = u
                                .credential_infos
                                .iter()
                                .map(|c| {
                                    let name = Mechanism::from_code(c.mechanism)
                                        .map(|m| m.name().to_string())
                                        .unwrap_or_else(|| format!("mechanism {}", c.mechanism));
                                    (name, c.iterations as u32)
                                })
                                .collect();
                            (u.user.to_string(), ms)
                        })
                        .collect()
                }
            };
            if out.json() {
                print_json(&serde_json::Value::Array(
                    users
                        .iter()
                        .map(|(u, ms)| {
                            serde_json::json!({
                                "user": u,
                                "credentials": ms.iter().map(|(m, i)| serde_json::json!({
                                    "mechanism": m,
                                    "iterations": i,
                                })).collect::<Vec<_>>(),
                            })
                        })
                        .collect(),
                ));
                return Ok(());
            }
            println!("{:<32} MECHANISMS", "USER");
            for (u, ms) in users {
                let ms: Vec<String> = ms
                    .iter()
                    .map(|(m, i)| format!("{m} ({i} iterations)"))
                    .collect();
                println!("{u:<32} {}", ms.join(", "));
            }
        }
        UserCmd::Delete {
            name,
            mechanism: m,
            target,
        } => {
            let mechs = match m {
                Some(m) => vec![mechanism(&m)?],
                None => Mechanism::ALL.to_vec(),
            };
            if let Some(dir) = target.data_dir {
                let users = Users::open(&dir)?;
                let done = users.apply(
                    &mechs
                        .iter()
                        .map(|&mech| Change::Delete {
                            user: name.clone(),
                            mech,
                        })
                        .collect::<Vec<_>>(),
                )?;
                if !done.contains(&true) {
                    bail!("user {name} has no such credential");
                }
                println!("user {name}: deleted");
                return Ok(());
            }
            let mut c = target.conn.connect().await?;
            // Only what the user has: deleting a missing credential is an error.
            let has: Vec<i8> = c
                .call(
                    &DescribeUserScramCredentialsRequest::default()
                        .with_users(Some(vec![UserName::default().with_name(sb(&name))])),
                    0,
                )
                .await?
                .results
                .iter()
                .flat_map(|r| r.credential_infos.iter().map(|i| i.mechanism))
                .collect();
            let deletions: Vec<_> = mechs
                .iter()
                .filter(|m| has.contains(&m.code()))
                .map(|m| {
                    ScramCredentialDeletion::default()
                        .with_name(sb(&name))
                        .with_mechanism(m.code())
                })
                .collect();
            if deletions.is_empty() {
                bail!("user {name} has no such credential");
            }
            alter(
                &target.conn,
                AlterUserScramCredentialsRequest::default().with_deletions(deletions),
            )
            .await?;
            println!("user {name}: deleted");
        }
    }
    Ok(())
}

async fn alter(conn: &Conn, req: AlterUserScramCredentialsRequest) -> Result<()> {
    let mut c = conn.connect().await?;
    let r = c.call(&req, 0).await?;
    for res in &r.results {
        if res.error_code != 0 {
            bail!(
                "user {}: {}",
                res.user.as_str(),
                kafka_error(res.error_code, res.error_message.as_deref())
            );
        }
    }
    Ok(())
}

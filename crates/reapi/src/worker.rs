//! `thindist worker`: a bot for schedulers that speak the Remote Workers API v1test2 (such as
//! BuildGrid). Each of `capacity` bot sessions takes one lease at a time: it resolves the Action
//! (the payload is an Action or its Digest), fetches the input tree from the CAS into a fresh
//! directory, runs the command with exactly the Command's environment, uploads the outputs,
//! stdout and stderr, and reports the ActionResult in the lease. A command's non-zero exit is an
//! ordinary result; only the bot's own failures are reported with an error status, and actions
//! that name anything outside their lease directory (see [`crate::paths`]) with
//! INVALID_ARGUMENT, before anything runs.

use crate::action::{Blob, BlobData};
use crate::blobcache::{BlobCache, FileBlob};
use crate::client::{Client, RemoteConfig};
use crate::digest::Digest;
use crate::paths::{self, is_invalid_action, InvalidAction};
use crate::proto::build::bazel::remote::execution::v2 as re;
use crate::proto::google::devtools::remoteworkers::v1test2 as rw;
use crate::proto::google::rpc::Status;
use anyhow::{bail, Context, Result};
use prost::Message;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const TYPE_PREFIX: &str = "type.googleapis.com/";

#[derive(Clone)]
pub struct WorkerConfig {
    pub remote: RemoteConfig,
    /// Leases run at once (one bot session each).
    pub capacity: usize,
    /// Where each lease gets its fresh input directory (default: the system temp directory).
    pub work_dir: Option<PathBuf>,
    /// Where the local CAS makes its directory (default: `work_dir`), removed when the worker
    /// stops; on the file system of `work_dir` its blobs are hard-linked, else copied.
    pub cache_dir: Option<PathBuf>,
    /// Bytes the local CAS may hold.
    pub cache_size: u64,
    /// Runs the commands (a fork server, say); `None` starts a process for each.
    pub runner: Option<Arc<dyn CommandRunner>>,
}

impl WorkerConfig {
    pub fn new(remote: RemoteConfig) -> WorkerConfig {
        WorkerConfig {
            remote,
            capacity: 1,
            work_dir: None,
            cache_dir: None,
            cache_size: 2 << 30,
            runner: None,
        }
    }
}

/// How a command of a lease ended: its exit code (-1 for a signal), stdout, stderr.
pub type CommandOutput = (i32, Vec<u8>, Vec<u8>);

/// Runs a lease's command some other way than as a process of its own: thindist passes one
/// that forks compilers from a fork server, as its local builds do.
pub trait CommandRunner: Send + Sync {
    /// Runs `arguments` in `cwd` with exactly the environment `env`, blocking; `None` when it
    /// cannot run this command, which then runs as a process.
    fn run(
        &self,
        arguments: &[String],
        cwd: &Path,
        env: &[(String, String)],
    ) -> Option<std::io::Result<CommandOutput>>;
}

/// Runs the worker until `shutdown` turns true, then tells the scheduler the bots terminate.
pub async fn run(config: WorkerConfig, shutdown: tokio::sync::watch::Receiver<bool>) -> Result<()> {
    let client = Arc::new(Client::connect(config.remote.clone()).await?);
    let work_dir = config.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let cache = Arc::new(BlobCache::new(
        config.cache_dir.as_deref().unwrap_or(&work_dir),
        config.cache_size,
    )?);
    let host =
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "host".into());
    let mut bots = Vec::new();
    for slot in 0..config.capacity.max(1) {
        let bot_id = format!("thindist-{}-{}-{slot}", host.trim(), std::process::id());
        bots.push(tokio::spawn(bot_loop(
            LeaseContext {
                client: client.clone(),
                cache: cache.clone(),
                work_dir: work_dir.clone(),
                runner: config.runner.clone(),
            },
            config.remote.clone(),
            bot_id,
            shutdown.clone(),
        )));
    }
    for bot in bots {
        bot.await.context("a bot task panicked")??;
    }
    Ok(())
}

fn any(name: &str, message: &impl Message) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("{TYPE_PREFIX}{name}"),
        value: message.encode_to_vec(),
    }
}

/// What a bot needs to run a lease, shared by the bots of a worker.
#[derive(Clone)]
struct LeaseContext {
    client: Arc<Client>,
    cache: Arc<BlobCache>,
    /// Where lease directories are made.
    work_dir: PathBuf,
    runner: Option<Arc<dyn CommandRunner>>,
}

async fn bot_loop(
    context: LeaseContext,
    remote: RemoteConfig,
    bot_id: String,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let mut bots = rw::bots_client::BotsClient::new(context.client.channel());
    let new_session = || rw::BotSession {
        bot_id: bot_id.clone(),
        status: rw::BotStatus::Ok as i32,
        ..Default::default()
    };
    let create = |bots: &mut rw::bots_client::BotsClient<tonic::transport::Channel>| {
        let request = remote.request(
            rw::CreateBotSessionRequest {
                parent: remote.instance.clone(),
                bot_session: Some(new_session()),
            },
            Duration::from_secs(30),
        );
        let mut bots = bots.clone();
        async move { bots.create_bot_session(request).await }
    };
    let mut session = create(&mut bots)
        .await
        .map_err(|s| anyhow::anyhow!("CreateBotSession: {}", s.message()))?
        .into_inner();
    tracing::info!("bot {bot_id} has session {}", session.name);
    let mut running: Option<(String, tokio::task::JoinHandle<Result<re::ActionResult>>)> = None;
    loop {
        // Take new work, drop cancelled work.
        for lease in session.leases.iter_mut() {
            // BuildGrid hands leases out already ACTIVE; others send them PENDING.
            let offered = lease.state == rw::LeaseState::Pending as i32
                || lease.state == rw::LeaseState::Active as i32;
            if offered && running.is_none() {
                lease.state = rw::LeaseState::Active as i32;
                let payload = lease.payload.clone().unwrap_or_default();
                let (context, bot) = (context.clone(), bot_id.clone());
                running = Some((
                    lease.id.clone(),
                    tokio::spawn(async move { execute_lease(&context, payload, &bot).await }),
                ));
            } else if lease.state == rw::LeaseState::Cancelled as i32 {
                if let Some((id, handle)) = &running {
                    if *id == lease.id {
                        handle.abort();
                        running = None;
                    }
                }
            }
        }
        // While a lease runs, wait for it (with a keepalive now and then) rather than sit in a
        // long-poll that would delay its report.
        let mut idle_poll = Duration::from_secs(10);
        if let Some((id, handle)) = running.as_mut() {
            tokio::select! {
                result = handle => {
                    let id = id.clone();
                    running = None;
                    if let Some(lease) = session.leases.iter_mut().find(|l| l.id == id) {
                        lease.state = rw::LeaseState::Completed as i32;
                        match result.context("the lease task failed").and_then(|r| r) {
                            Ok(action_result) => {
                                lease.result = Some(any("build.bazel.remote.execution.v2.ActionResult", &action_result));
                                lease.status = Some(Status { code: 0, message: String::new(), details: vec![] });
                            }
                            Err(err) => {
                                tracing::warn!("bot {bot_id}: lease {id} failed: {err:#}");
                                let code = if is_invalid_action(&err) { tonic::Code::InvalidArgument } else { tonic::Code::Internal };
                                lease.status = Some(Status { code: code as i32, message: format!("{err:#}"), details: vec![] });
                            }
                        }
                    }
                    idle_poll = Duration::from_secs(2);
                }
                _ = tokio::time::sleep(Duration::from_secs(5)) => { idle_poll = Duration::from_secs(2); }
                _ = shutdown.changed() => {}
            }
        }
        if *shutdown.borrow() {
            if let Some((_, handle)) = running.take() {
                handle.abort();
            }
            session.status = rw::BotStatus::BotTerminating as i32;
            let request = remote.request(
                rw::UpdateBotSessionRequest {
                    name: session.name.clone(),
                    bot_session: Some(session.clone()),
                    update_mask: None,
                },
                Duration::from_secs(5),
            );
            let _ = bots.update_bot_session(request).await;
            return Ok(());
        }
        let request = remote.request(
            rw::UpdateBotSessionRequest {
                name: session.name.clone(),
                bot_session: Some(session.clone()),
                update_mask: None,
            },
            idle_poll,
        );
        let update = tokio::select! {
            update = bots.update_bot_session(request) => update,
            _ = shutdown.changed() => continue,
        };
        match update {
            Ok(response) => {
                let mut next = response.into_inner();
                tracing::debug!(
                    "bot {bot_id}: session version {} with leases {:?}",
                    next.version,
                    next.leases
                        .iter()
                        .map(|l| (l.id.clone(), l.state))
                        .collect::<Vec<_>>()
                );
                // Keep the local state of the lease still running; the server echoes it.
                if let Some((id, _)) = &running {
                    for lease in next
                        .leases
                        .iter_mut()
                        .filter(|l| l.id == *id && l.state != rw::LeaseState::Cancelled as i32)
                    {
                        lease.state = rw::LeaseState::Active as i32;
                    }
                }
                session = next;
            }
            Err(status) if status.code() == tonic::Code::DeadlineExceeded => {
                tracing::debug!("bot {bot_id}: no work yet")
            }
            Err(status)
                if status.code() == tonic::Code::NotFound
                    || status.code() == tonic::Code::InvalidArgument =>
            {
                tracing::warn!(
                    "bot {bot_id}: session {} lost ({}); starting a new one",
                    session.name,
                    status.message()
                );
                if let Some((_, handle)) = running.take() {
                    handle.abort();
                }
                session = create(&mut bots)
                    .await
                    .map_err(|s| anyhow::anyhow!("CreateBotSession: {}", s.message()))?
                    .into_inner();
            }
            Err(status) => {
                tracing::warn!(
                    "bot {bot_id}: UpdateBotSession failed: {} ({:?})",
                    status.message(),
                    status.code()
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Runs one lease's action and returns its ActionResult.
async fn execute_lease(
    context: &LeaseContext,
    payload: prost_types::Any,
    bot_id: &str,
) -> Result<re::ActionResult> {
    let client = &*context.client;
    let action = if payload
        .type_url
        .ends_with("build.bazel.remote.execution.v2.Action")
    {
        re::Action::decode(payload.value.as_slice()).context("undecodable Action in the lease")?
    } else if payload
        .type_url
        .ends_with("build.bazel.remote.execution.v2.Digest")
    {
        let digest = re::Digest::decode(payload.value.as_slice())
            .context("undecodable Digest in the lease")?;
        let bytes = client
            .read_blob(&action_digest(Some(&digest), "lease payload")?)
            .await?;
        re::Action::decode(bytes.as_slice()).context("undecodable Action blob")?
    } else {
        bail!("lease payload of unknown type {}", payload.type_url);
    };
    let command_digest = action_digest(action.command_digest.as_ref(), "command")?;
    let command = re::Command::decode(client.read_blob(&command_digest).await?.as_slice())
        .context("undecodable Command blob")?;
    // Every path the Command names is checked before anything is fetched or run.
    let cwd_components = paths::relative_path(&command.working_directory)?;
    let every_output = command
        .output_files
        .iter()
        .chain(&command.output_directories)
        .chain(&command.output_paths)
        .map(|o| output_components(&cwd_components, o))
        .collect::<Result<Vec<_>>>()?;
    // The files to collect: output_paths, or output_files from clients older than v2.1.
    let outputs = if command.output_paths.is_empty() {
        &command.output_files
    } else {
        &command.output_paths
    };
    let root = crate::private_tempdir_in(&context.work_dir, "thindist-lease-")?;
    let input_root = action_digest(action.input_root_digest.as_ref(), "input root")?;
    let before = context.cache.stats();
    fetch_tree(client, &context.cache, &input_root, root.path()).await?;
    let after = context.cache.stats();
    tracing::info!(
        "bot {bot_id}: input root {input_root}: {} blobs fetched ({} bytes), {} from the local CAS, {} evicted",
        after.fetched - before.fetched,
        after.fetched_bytes - before.fetched_bytes,
        after.hits - before.hits,
        after.evicted - before.evicted
    );
    let cwd = paths::make_dirs(root.path(), &cwd_components)?;
    // The API makes the worker create every output's parent directory.
    for output in &every_output {
        paths::make_dirs(root.path(), &output[..output.len() - 1])?;
    }
    let (program, args) = command
        .arguments
        .split_first()
        .context("the Command has no arguments")?;
    let started = std::time::SystemTime::now();
    let env_vars: Vec<(String, String)> = command
        .environment_variables
        .iter()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    let forked = match &context.runner {
        Some(runner) => {
            let (runner, arguments, cwd, vars) = (
                runner.clone(),
                command.arguments.clone(),
                cwd.clone(),
                env_vars.clone(),
            );
            tokio::task::spawn_blocking(move || runner.run(&arguments, &cwd, &vars))
                .await
                .context("the command runner panicked")?
        }
        None => None,
    };
    let output = match forked {
        Some(output) => output,
        None => tokio::process::Command::new(program)
            .args(args)
            .current_dir(&cwd)
            .env_clear()
            .envs(env_vars)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map(|out| (out.status.code().unwrap_or(-1), out.stdout, out.stderr)),
    };
    let (exit_code, stdout, stderr) = match output {
        Ok(output) => output,
        // The command could not start: report it like a shell would, as a failed command.
        Err(e) => (
            127,
            Vec::new(),
            format!("{bot_id}: cannot run {program}: {e}\n").into_bytes(),
        ),
    };
    let mut blobs = Vec::new();
    let mut output_files = Vec::new();
    for path in outputs {
        let components = output_components(&cwd_components, path)?;
        if let Some((bytes, executable)) = paths::read_output(root.path(), &components)? {
            let digest = Digest::of_bytes(&bytes);
            output_files.push(re::OutputFile {
                path: path.clone(),
                digest: Some(digest.to_proto()),
                is_executable: executable,
                contents: vec![],
            });
            blobs.push(Blob {
                digest,
                data: BlobData::Bytes(bytes),
            });
        }
    }
    let stdout_digest = Digest::of_bytes(&stdout);
    let stderr_digest = Digest::of_bytes(&stderr);
    blobs.push(Blob {
        digest: stdout_digest.clone(),
        data: BlobData::Bytes(stdout),
    });
    blobs.push(Blob {
        digest: stderr_digest.clone(),
        data: BlobData::Bytes(stderr),
    });
    client.upload_new(&blobs).await?;
    let now = prost_types::Timestamp::from(std::time::SystemTime::now());
    Ok(re::ActionResult {
        output_files,
        output_directories: vec![],
        exit_code,
        stdout_raw: vec![],
        stdout_digest: Some(stdout_digest.to_proto()),
        stderr_raw: vec![],
        stderr_digest: Some(stderr_digest.to_proto()),
        execution_metadata: Some(re::ExecutedActionMetadata {
            worker: bot_id.to_string(),
            execution_start_timestamp: Some(prost_types::Timestamp::from(started)),
            execution_completed_timestamp: Some(now),
            ..Default::default()
        }),
    })
}

/// An output path's components from the lease root: it is relative to the working directory.
fn output_components<'a>(cwd: &[&'a str], output: &'a str) -> Result<Vec<&'a str>> {
    let components = paths::relative_path(output)?;
    if components.is_empty() {
        return Err(InvalidAction(format!("output {output:?} names the working directory")).into());
    }
    Ok(cwd.iter().copied().chain(components).collect())
}

/// The digest of `what` as the action names it: missing or malformed, the action is invalid.
fn action_digest(digest: Option<&re::Digest>, what: &str) -> Result<Digest> {
    let digest = digest.ok_or_else(|| InvalidAction(format!("{what} has no digest")))?;
    Digest::parse(digest).map_err(|e| InvalidAction(format!("{what}: {e:#}")).into())
}

/// Writes the Directory tree `digest` (and every file in it) below `dest`, through the local
/// CAS `cache`. Each name must be a plain component, unique in its Directory (so no write goes
/// through a symlink or lands on another entry), and each symlink must lead inside `dest`.
/// The files are fetched together once every Directory has been checked.
async fn fetch_tree(
    client: &Client,
    cache: &BlobCache,
    digest: &Digest,
    dest: &Path,
) -> Result<()> {
    let mut pending = vec![(digest.clone(), dest.to_path_buf(), 0usize)];
    let mut files = Vec::new();
    while let Some((digest, dir, depth)) = pending.pop() {
        let directory = re::Directory::decode(cache.read(client, &digest).await?.as_slice())
            .context("undecodable Directory blob")?;
        let mut names = std::collections::HashSet::new();
        let entries = directory
            .files
            .iter()
            .map(|f| &f.name)
            .chain(directory.directories.iter().map(|d| &d.name))
            .chain(directory.symlinks.iter().map(|s| &s.name));
        for name in entries {
            if !names.insert(paths::entry_name(name)?) {
                return Err(InvalidAction(format!(
                    "{name:?} appears twice in the input directory {digest}"
                ))
                .into());
            }
        }
        for file in &directory.files {
            let blob = FileBlob {
                digest: action_digest(file.digest.as_ref(), &file.name)?,
                executable: file.is_executable,
            };
            files.push((blob, dir.join(&file.name)));
        }
        for link in &directory.symlinks {
            paths::symlink_target(depth, &link.target)?;
            tokio::fs::symlink(&link.target, dir.join(&link.name)).await?;
        }
        for sub in &directory.directories {
            let path = dir.join(&sub.name);
            tokio::fs::create_dir(&path).await?;
            pending.push((
                action_digest(sub.digest.as_ref(), &sub.name)?,
                path,
                depth + 1,
            ));
        }
    }
    cache.materialize(client, &files).await
}

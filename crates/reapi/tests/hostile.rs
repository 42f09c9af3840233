//! The client and the worker against a hostile REAPI server on loopback: a tonic server written
//! here that declares absurd digests, serves blobs that do not match them, answers "busy", and
//! (as a Remote Workers scheduler) hands out leases whose actions name paths outside their lease
//! directory. Every test is bounded by [`LIMIT`] and stops its server and worker itself.

use prost::Message;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thindist_reapi::action::{Blob, BlobData};
use thindist_reapi::proto::build::bazel::remote::execution::v2 as re;
use thindist_reapi::proto::google::bytestream as bs;
use thindist_reapi::proto::google::devtools::remoteworkers::v1test2 as rw;
use thindist_reapi::proto::google::rpc;
use thindist_reapi::worker::WorkerConfig;
use thindist_reapi::{ActionSpec, Client, Digest, RemoteConfig};
use tonic::{Code, Request, Response, Status};

const LIMIT: Duration = Duration::from_secs(60);
const TIB: i64 = 1 << 40;

/// What the fake server holds and how it misbehaves.
#[derive(Default)]
struct State {
    /// The CAS, by hash.
    blobs: HashMap<String, Vec<u8>>,
    /// Bytes served for a hash instead of the stored ones.
    lies: HashMap<String, Vec<u8>>,
    /// Hashes whose ByteStream.Read never ends.
    endless: HashSet<String>,
    /// What GetActionResult answers for every action.
    action_result: Option<re::ActionResult>,
    max_batch_bytes: i64,
    /// Every other storage call (the first included) fails with this code, `failures` times in all,
    /// so that each method of a sequence gets to fail once.
    failure: Option<Code>,
    failures: u32,
    failed_last: bool,
    /// Storage calls received, by method.
    calls: HashMap<&'static str, u32>,
    /// Leases still to hand out, and the statuses of those reported back.
    leases: Vec<rw::Lease>,
    reported: HashMap<String, (rpc::Status, Option<prost_types::Any>)>,
}

#[derive(Clone)]
struct Fake(Arc<Mutex<State>>);

impl Fake {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    fn put(&self, bytes: &[u8]) -> Digest {
        let digest = Digest::of_bytes(bytes);
        self.state()
            .blobs
            .insert(digest.hash.clone(), bytes.to_vec());
        digest
    }

    fn put_message(&self, message: &impl Message) -> Digest {
        self.put(&message.encode_to_vec())
    }

    /// Counts a CAS or action-cache call and fails it if the server is set to.
    fn storage_call(&self, method: &'static str) -> Result<(), Status> {
        let mut state = self.state();
        *state.calls.entry(method).or_default() += 1;
        match state.failure {
            Some(code) if state.failures > 0 && !state.failed_last => {
                state.failures -= 1;
                state.failed_last = true;
                Err(Status::new(code, "Concurrent RPC limit exceeded"))
            }
            _ => {
                state.failed_last = false;
                Ok(())
            }
        }
    }

    fn uploaded(&self, bytes: &[u8]) -> bool {
        self.state().blobs.values().any(|b| b == bytes)
    }

    /// Serves every service on a loopback port until the returned sender is dropped.
    async fn serve(&self) -> (String, Serving) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("grpc://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .add_service(re::capabilities_server::CapabilitiesServer::new(
                self.clone(),
            ))
            .add_service(
                re::content_addressable_storage_server::ContentAddressableStorageServer::new(
                    self.clone(),
                ),
            )
            .add_service(bs::byte_stream_server::ByteStreamServer::new(self.clone()))
            .add_service(re::action_cache_server::ActionCacheServer::new(
                self.clone(),
            ))
            .add_service(rw::bots_server::BotsServer::new(self.clone()))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            );
        let task = tokio::spawn(server);
        (url, Serving { stop, task })
    }
}

/// A running fake server; dropping it asks the server to stop.
struct Serving {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Serving {
    /// Stops the server and waits until it has closed its connections, so that a client's
    /// next call cannot still reach it.
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

#[tonic::async_trait]
impl re::capabilities_server::Capabilities for Fake {
    async fn get_capabilities(
        &self,
        _: Request<re::GetCapabilitiesRequest>,
    ) -> Result<Response<re::ServerCapabilities>, Status> {
        Ok(Response::new(re::ServerCapabilities {
            cache_capabilities: Some(re::CacheCapabilities {
                digest_functions: vec![re::digest_function::Value::Sha256 as i32],
                max_batch_total_size_bytes: self.state().max_batch_bytes,
                ..Default::default()
            }),
            ..Default::default()
        }))
    }
}

#[tonic::async_trait]
impl re::content_addressable_storage_server::ContentAddressableStorage for Fake {
    async fn find_missing_blobs(
        &self,
        request: Request<re::FindMissingBlobsRequest>,
    ) -> Result<Response<re::FindMissingBlobsResponse>, Status> {
        self.storage_call("FindMissingBlobs")?;
        let state = self.state();
        let missing = request
            .into_inner()
            .blob_digests
            .into_iter()
            .filter(|d| !state.blobs.contains_key(&d.hash))
            .collect();
        Ok(Response::new(re::FindMissingBlobsResponse {
            missing_blob_digests: missing,
        }))
    }

    async fn batch_update_blobs(
        &self,
        request: Request<re::BatchUpdateBlobsRequest>,
    ) -> Result<Response<re::BatchUpdateBlobsResponse>, Status> {
        self.storage_call("BatchUpdateBlobs")?;
        let mut responses = Vec::new();
        for r in request.into_inner().requests {
            let digest = r.digest.unwrap_or_default();
            self.state().blobs.insert(digest.hash.clone(), r.data);
            responses.push(re::batch_update_blobs_response::Response {
                digest: Some(digest),
                status: Some(rpc::Status::default()),
            });
        }
        Ok(Response::new(re::BatchUpdateBlobsResponse { responses }))
    }

    async fn batch_read_blobs(
        &self,
        request: Request<re::BatchReadBlobsRequest>,
    ) -> Result<Response<re::BatchReadBlobsResponse>, Status> {
        self.storage_call("BatchReadBlobs")?;
        let state = self.state();
        let responses = request
            .into_inner()
            .digests
            .into_iter()
            .map(|d| {
                let data = state.lies.get(&d.hash).or(state.blobs.get(&d.hash));
                re::batch_read_blobs_response::Response {
                    status: Some(rpc::Status {
                        code: if data.is_some() {
                            0
                        } else {
                            Code::NotFound as i32
                        },
                        ..Default::default()
                    }),
                    data: data.cloned().unwrap_or_default(),
                    digest: Some(d),
                }
            })
            .collect();
        Ok(Response::new(re::BatchReadBlobsResponse { responses }))
    }
}

type Stream<T> = Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl bs::byte_stream_server::ByteStream for Fake {
    type ReadStream = Stream<bs::ReadResponse>;

    async fn read(
        &self,
        request: Request<bs::ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        self.storage_call("ByteStream.Read")?;
        let resource = request.into_inner().resource_name;
        let hash = resource.split('/').nth(1).unwrap_or_default().to_string();
        let state = self.state();
        if state.endless.contains(&hash) {
            let chunk = bs::ReadResponse {
                data: vec![0; 1 << 16],
            };
            return Ok(Response::new(Box::pin(tokio_stream::iter(
                std::iter::repeat(Ok(chunk)),
            ))));
        }
        let data = state.lies.get(&hash).or(state.blobs.get(&hash)).cloned();
        let data = data.ok_or_else(|| Status::not_found(resource))?;
        Ok(Response::new(Box::pin(tokio_stream::iter([Ok(
            bs::ReadResponse { data },
        )]))))
    }

    async fn write(
        &self,
        _: Request<tonic::Streaming<bs::WriteRequest>>,
    ) -> Result<Response<bs::WriteResponse>, Status> {
        Err(Status::unimplemented("the tests send small blobs only"))
    }
}

#[tonic::async_trait]
impl re::action_cache_server::ActionCache for Fake {
    async fn get_action_result(
        &self,
        _: Request<re::GetActionResultRequest>,
    ) -> Result<Response<re::ActionResult>, Status> {
        self.storage_call("GetActionResult")?;
        let result = self.state().action_result.clone();
        result
            .map(Response::new)
            .ok_or_else(|| Status::not_found("no result"))
    }

    async fn update_action_result(
        &self,
        _: Request<re::UpdateActionResultRequest>,
    ) -> Result<Response<re::ActionResult>, Status> {
        Err(Status::unimplemented("not used"))
    }
}

/// A scheduler that hands its leases to the first session and records what comes back.
#[tonic::async_trait]
impl rw::bots_server::Bots for Fake {
    async fn create_bot_session(
        &self,
        request: Request<rw::CreateBotSessionRequest>,
    ) -> Result<Response<rw::BotSession>, Status> {
        let mut session = request.into_inner().bot_session.unwrap_or_default();
        session.name = "session".into();
        session.leases = std::mem::take(&mut self.state().leases);
        Ok(Response::new(session))
    }

    async fn update_bot_session(
        &self,
        request: Request<rw::UpdateBotSessionRequest>,
    ) -> Result<Response<rw::BotSession>, Status> {
        let mut session = request.into_inner().bot_session.unwrap_or_default();
        let completed = |l: &rw::Lease| l.state == rw::LeaseState::Completed as i32;
        for lease in session.leases.iter().filter(|l| completed(l)) {
            let status = lease.status.clone().unwrap_or_default();
            let report = (status, lease.result.clone());
            self.state().reported.insert(lease.id.clone(), report);
        }
        session.leases.retain(|l| !completed(l));
        // A long-poll in miniature, so an idle bot does not spin.
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(Response::new(session))
    }
}

fn fake() -> Fake {
    Fake(Arc::new(Mutex::new(State {
        max_batch_bytes: 4 << 20,
        ..Default::default()
    })))
}

fn config(url: &str) -> RemoteConfig {
    let mut config = RemoteConfig::new(url);
    config.timeout = Duration::from_secs(10);
    config
}

fn any(name: &str, message: &impl Message) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("type.googleapis.com/{name}"),
        value: message.encode_to_vec(),
    }
}

fn proto(d: &Digest) -> re::Digest {
    re::Digest {
        hash: d.hash.clone(),
        size_bytes: d.size,
    }
}

// ---- the client ----

fn spec() -> ActionSpec {
    ActionSpec {
        arguments: vec!["true".into()],
        ..Default::default()
    }
}

/// Runs an action whose cached result names `stdout` as its stdout, and returns the error.
async fn run_with_stdout(server: &Fake, stdout: re::Digest) -> String {
    server.state().action_result = Some(re::ActionResult {
        stdout_digest: Some(stdout),
        ..Default::default()
    });
    let (url, _serving) = server.serve().await;
    let client = Client::connect(config(&url)).await.unwrap();
    let outcome = tokio::time::timeout(LIMIT, client.run(&spec()))
        .await
        .unwrap();
    let err = outcome.expect_err("a lying server must make the run fail");
    // No status code: a blob damaged in transit may arrive whole next time.
    assert!(err.is_transient());
    err.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_rejects_a_4_tib_digest_without_reserving_it() {
    let server = fake();
    let hello = server.put(b"hello");
    let err = run_with_stdout(
        &server,
        re::Digest {
            size_bytes: 4 * TIB,
            ..proto(&hello)
        },
    )
    .await;
    assert!(
        err.contains(&format!("{}/{}", hello.hash, 4 * TIB)),
        "{err}"
    );
    assert!(err.contains("arrived with 5 bytes"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_rejects_a_negative_size() {
    let server = fake();
    let hello = server.put(b"hello");
    let err = run_with_stdout(
        &server,
        re::Digest {
            size_bytes: -1,
            ..proto(&hello)
        },
    )
    .await;
    assert!(err.contains("negative size"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cuts_off_a_bytestream_longer_than_its_digest() {
    let server = fake();
    server.state().max_batch_bytes = 1100;
    let declared = Digest::of_bytes(&[7; 200]);
    server.state().endless.insert(declared.hash.clone());
    let err = run_with_stdout(&server, proto(&declared)).await;
    assert!(err.contains(&declared.to_string()), "{err}");
    assert!(err.contains("instead of 200"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_checks_batch_read_blobs_against_their_digests() {
    let server = fake();
    let expected = server.put(b"expected");
    server
        .state()
        .lies
        .insert(expected.hash.clone(), b"tampered".to_vec());
    let err = run_with_stdout(&server, proto(&expected)).await;
    assert!(
        err.contains(&expected.to_string()) && err.contains("damaged"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_rejects_a_malformed_hash() {
    let server = fake();
    let err = run_with_stdout(
        &server,
        re::Digest {
            hash: "../../etc/passwd".into(),
            size_bytes: 3,
        },
    )
    .await;
    assert!(err.contains("not a SHA-256 hash"), "{err}");
}

fn blob(bytes: &[u8]) -> Blob {
    Blob {
        digest: Digest::of_bytes(bytes),
        data: BlobData::Bytes(bytes.to_vec()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_retries_busy_cas_calls_by_status_code() {
    let server = fake();
    let (url, _serving) = server.serve().await;
    let client = Client::connect(config(&url)).await.unwrap();
    {
        let mut state = server.state();
        state.failure = Some(Code::ResourceExhausted);
        state.failures = 2;
    }
    let blobs = [blob(b"one"), blob(b"two")];
    tokio::time::timeout(LIMIT, client.upload(&blobs))
        .await
        .unwrap()
        .unwrap();
    assert!(server.uploaded(b"one") && server.uploaded(b"two"));
    let calls = server.state().calls.clone();
    assert_eq!(
        (calls["FindMissingBlobs"], calls["BatchUpdateBlobs"]),
        (2, 2),
        "{calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_does_not_retry_invalid_argument() {
    let server = fake();
    let (url, _serving) = server.serve().await;
    let client = Client::connect(config(&url)).await.unwrap();
    {
        let mut state = server.state();
        state.failure = Some(Code::InvalidArgument);
        state.failures = 100;
    }
    let blobs = [blob(b"one")];
    let err = tokio::time::timeout(LIMIT, client.upload(&blobs))
        .await
        .unwrap()
        .unwrap_err();
    assert!(format!("{err:#}").contains("InvalidArgument"), "{err:#}");
    assert_eq!(server.state().calls["FindMissingBlobs"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_say_whether_trying_again_may_help() {
    let server = fake();
    let (url, serving) = server.serve().await;
    let client = Client::connect(config(&url)).await.unwrap();
    {
        let mut state = server.state();
        state.failure = Some(Code::PermissionDenied);
        state.failures = 100;
    }
    let refused = tokio::time::timeout(LIMIT, client.run(&spec()))
        .await
        .unwrap();
    let err = refused.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(server.state().calls["GetActionResult"], 1);
    // A server that went away is retried within the call, and then worth retrying later.
    tokio::time::timeout(LIMIT, serving.stop()).await.unwrap();
    let gone = tokio::time::timeout(LIMIT, client.run(&spec()))
        .await
        .unwrap();
    let err = gone.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("Unavailable"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_prepares_a_whole_build_with_one_query_and_one_batch() {
    let server = fake();
    let (url, _serving) = server.serve().await;
    let client = Client::connect(config(&url)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Three jobs over four files; `shared.bc` is an input of every job.
    let input = |name: &str| {
        let source = dir.path().join(name);
        std::fs::write(&source, format!("contents of {name}")).unwrap();
        thindist_reapi::InputFile {
            path: name.into(),
            digest: Digest::of_file(&source).unwrap(),
            executable: false,
            source,
        }
    };
    let specs: Vec<ActionSpec> = ["a.bc", "b.bc", "c.bc"]
        .iter()
        .map(|module| ActionSpec {
            arguments: vec!["clang".into(), module.to_string()],
            inputs: vec![input(module), input("shared.bc")],
            ..Default::default()
        })
        .collect();
    let prepared = tokio::time::timeout(LIMIT, client.prepare(&specs))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(prepared.len(), 3);
    let calls = server.state().calls.clone();
    let expected = [
        ("GetActionResult", 3),
        ("FindMissingBlobs", 1),
        ("BatchUpdateBlobs", 1),
    ];
    assert_eq!(calls, expected.into_iter().collect(), "{calls:?}");
    assert!(server.uploaded(b"contents of shared.bc") && server.uploaded(b"contents of c.bc"));
}

// ---- the worker ----

/// A scratch directory: the worker's work directory inside it, a secret beside it.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let scratch = Scratch {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir(scratch.work()).unwrap();
        std::fs::write(scratch.secret(), SECRET).unwrap();
        scratch
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn work(&self) -> PathBuf {
        self.path().join("work")
    }

    fn secret(&self) -> PathBuf {
        self.path().join("secret.txt")
    }
}

const SECRET: &[u8] = b"the secret that must not leave this machine";

/// An action for the fake CAS: `sh -c script` in `working_directory` with `outputs`, over the
/// input root `root` (the empty directory by default).
fn action(
    server: &Fake,
    script: &str,
    working_directory: &str,
    outputs: &[&str],
    root: Option<re::Directory>,
) -> re::Action {
    let command = re::Command {
        arguments: vec!["/bin/sh".into(), "-c".into(), script.into()],
        output_paths: outputs.iter().map(|o| o.to_string()).collect(),
        working_directory: working_directory.into(),
        ..Default::default()
    };
    re::Action {
        command_digest: Some(proto(&server.put_message(&command))),
        input_root_digest: Some(proto(&server.put_message(&root.unwrap_or_default()))),
        ..Default::default()
    }
}

/// Hands `action` to a real worker as a lease and returns the lease's status and result.
async fn run_lease(
    server: &Fake,
    scratch: &Scratch,
    action: re::Action,
) -> (rpc::Status, Option<re::ActionResult>) {
    let config = |url: &str| WorkerConfig {
        work_dir: Some(scratch.work()),
        ..WorkerConfig::new(config(url))
    };
    run_leases(server, config, vec![action]).await.remove(0)
}

/// Hands `actions` to one real worker (made by `worker_config` from the server's URL) as
/// leases, and returns each lease's status and result.
async fn run_leases(
    server: &Fake,
    worker_config: impl Fn(&str) -> WorkerConfig,
    actions: Vec<re::Action>,
) -> Vec<(rpc::Status, Option<re::ActionResult>)> {
    // A fresh id each time: a bot that shuts down reports its last lease once more.
    static LEASES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let ids: Vec<String> = actions
        .into_iter()
        .map(|action| {
            let id = format!(
                "lease-{}",
                LEASES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            server.state().leases.push(rw::Lease {
                id: id.clone(),
                payload: Some(any("build.bazel.remote.execution.v2.Action", &action)),
                state: rw::LeaseState::Pending as i32,
                ..Default::default()
            });
            id
        })
        .collect();
    let (url, _serving) = server.serve().await;
    let (shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(thindist_reapi::worker::run(
        worker_config(&url),
        shutdown_rx,
    ));
    let reported = tokio::time::timeout(LIMIT, async {
        loop {
            {
                let state = server.state();
                if ids.iter().all(|id| state.reported.contains_key(id)) {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(reported.is_ok(), "the worker never reported every lease");
    shutdown.send(true).unwrap();
    tokio::time::timeout(LIMIT, worker)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let mut state = server.state();
    ids.iter()
        .map(|id| {
            let (status, result) = state.reported.remove(id).unwrap();
            let result = result.map(|any| re::ActionResult::decode(any.value.as_slice()).unwrap());
            (status, result)
        })
        .collect()
}

/// Runs `action` and checks it was refused as invalid, without leaking the secret.
async fn assert_refused(server: &Fake, scratch: &Scratch, action: re::Action, why: &str) {
    let (status, _) = run_lease(server, scratch, action).await;
    assert_eq!(status.code, Code::InvalidArgument as i32, "{status:?}");
    assert!(
        status.message.contains(why),
        "{:?} lacks {why:?}",
        status.message
    );
    assert!(!server.uploaded(SECRET), "the secret was uploaded");
    let lease_dirs = std::fs::read_dir(scratch.work())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("lease-")
        })
        .count();
    assert_eq!(lease_dirs, 0, "the lease directory was left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_refuses_an_absolute_working_directory() {
    let (server, scratch) = (fake(), Scratch::new());
    let outside = scratch.path().display().to_string();
    let action = action(&server, "echo pwned > pwned", &outside, &[], None);
    assert_refused(&server, &scratch, action, "is not relative").await;
    assert!(!scratch.path().join("pwned").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_refuses_outputs_outside_the_lease() {
    let (server, scratch) = (fake(), Scratch::new());
    let secret = scratch.secret().display().to_string();
    // The lease directory is work/thindist-lease-*, so ../../secret.txt is the secret.
    for (output, why) in [
        ("../../secret.txt", "contains \"..\""),
        ("sub/../../../secret.txt", "contains \"..\""),
        (secret.as_str(), "is not relative"),
        ("newdir/../../../escaped/x", "contains \"..\""),
    ] {
        let action = action(&server, "true", "", &[output], None);
        assert_refused(&server, &scratch, action, why).await;
    }
    assert!(!scratch.path().join("escaped").exists());
    assert!(!scratch.work().join("newdir").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_does_not_follow_output_symlinks() {
    let (server, scratch) = (fake(), Scratch::new());
    let secret = scratch.secret().display().to_string();
    // The worker made d/up as the output's parent; the command swaps it for a symlink.
    let script = format!(
        "ln -s {secret} out.txt; rm -r d; mkdir d && ln -s {} d/up",
        scratch.path().display()
    );
    for output in ["out.txt", "d/up/secret.txt"] {
        let action = action(&server, &script, "", &[output], None);
        assert_refused(&server, &scratch, action, "symlink").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_refuses_input_names_that_escape() {
    let (server, scratch) = (fake(), Scratch::new());
    let evil = server.put(b"evil");
    let file = |name: &str| re::Directory {
        files: vec![re::FileNode {
            name: name.into(),
            digest: Some(proto(&evil)),
            is_executable: false,
        }],
        ..Default::default()
    };
    let dir = |name: &str| re::Directory {
        directories: vec![re::DirectoryNode {
            name: name.into(),
            digest: Some(proto(&server.put_message(&file("x")))),
        }],
        ..Default::default()
    };
    let link = |name: &str, target: &str| re::Directory {
        symlinks: vec![re::SymlinkNode {
            name: name.into(),
            target: target.into(),
        }],
        ..Default::default()
    };
    let secret = scratch.secret().display().to_string();
    let nested = |inner: re::Directory| re::Directory {
        directories: vec![re::DirectoryNode {
            name: "sub".into(),
            digest: Some(proto(&server.put_message(&inner))),
        }],
        ..Default::default()
    };
    let roots = [
        (file("../../evil"), "not a plain file name"),
        (file(".."), "not a plain file name"),
        (file("."), "not a plain file name"),
        (file(""), "not a plain file name"),
        (file("a/b"), "not a plain file name"),
        (dir(".."), "not a plain file name"),
        (dir("../../evil"), "not a plain file name"),
        (link("s", &secret), "not a relative path"),
        (link("s", "../.."), "leads out of the lease"),
        (
            nested(link("s", "../../secret.txt")),
            "leads out of the lease",
        ),
        (nested(link("s", "x/../../..")), "after a name"),
        (link("../s", "x"), "not a plain file name"),
        (
            re::Directory {
                files: file("x").files,
                symlinks: link("x", "y").symlinks,
                ..Default::default()
            },
            "appears twice",
        ),
    ];
    for (root, why) in roots {
        let action = action(&server, "cat s/* > out.txt", "", &["out.txt"], Some(root));
        assert_refused(&server, &scratch, action, why).await;
    }
    assert!(!scratch.path().join("evil").exists());
    assert!(!scratch.path().join("s").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_refuses_absurd_digests_in_the_action() {
    let (server, scratch) = (fake(), Scratch::new());
    let mut huge = action(&server, "true", "", &[], None);
    huge.command_digest.as_mut().unwrap().size_bytes = 4 * TIB;
    let (status, _) = run_lease(&server, &scratch, huge).await;
    assert_ne!(status.code, 0, "{status:?}");
    assert!(
        status.message.contains(&(4 * TIB).to_string()),
        "{status:?}"
    );
    let mut negative = action(&server, "true", "", &[], None);
    negative.input_root_digest.as_mut().unwrap().size_bytes = -5;
    assert_refused(&server, &scratch, negative, "negative size").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_runs_a_contained_action_through_a_busy_cas() {
    let (server, scratch) = (fake(), Scratch::new());
    let input = server.put(b"input\n");
    let root = re::Directory {
        directories: vec![re::DirectoryNode {
            name: "src".into(),
            digest: Some(proto(&server.put_message(&re::Directory {
                files: vec![re::FileNode {
                    name: "in.txt".into(),
                    digest: Some(proto(&input)),
                    is_executable: false,
                }],
                // Symlinks that stay inside are fine.
                symlinks: vec![re::SymlinkNode {
                    name: "again.txt".into(),
                    target: "../src/./in.txt".into(),
                }],
                ..Default::default()
            }))),
        }],
        ..Default::default()
    };
    let action = action(
        &server,
        "cat in.txt again.txt > out/copy.txt",
        "src",
        &["out/copy.txt"],
        Some(root),
    );
    {
        // BuildGrid's "Concurrent RPC limit exceeded" on the worker's first CAS calls.
        let mut state = server.state();
        state.failure = Some(Code::ResourceExhausted);
        state.failures = 100;
    }
    let (status, result) = run_lease(&server, &scratch, action).await;
    assert_eq!(status.code, 0, "{status:?}");
    let result = result.unwrap();
    assert_eq!(result.exit_code, 0);
    let copy = &result.output_files[0];
    assert_eq!(copy.path, "out/copy.txt");
    assert_eq!(
        copy.digest,
        Some(proto(&Digest::of_bytes(b"input\ninput\n")))
    );
    assert!(server.uploaded(b"input\ninput\n"));
    // Reads of the command, two directories and a file, then the upload of the output (new
    // by nature, so not looked for first): each failed once.
    let calls = server.state().calls.clone();
    let expected = [("BatchReadBlobs", 8), ("BatchUpdateBlobs", 2)];
    assert_eq!(calls, expected.into_iter().collect(), "{calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_keeps_its_lease_and_cache_directories_to_itself() {
    let (server, scratch) = (fake(), Scratch::new());
    // The lease's root, and the worker's local CAS beside it in the work directory.
    let action = action(
        &server,
        "stat -c %a . ../thindist-worker-cas-* > modes",
        "",
        &["modes"],
        None,
    );
    let (status, result) = run_lease(&server, &scratch, action).await;
    assert_eq!(status.code, 0, "{status:?}");
    let modes = &result.unwrap().output_files[0];
    assert_eq!(
        modes.digest,
        Some(proto(&Digest::of_bytes(b"700\n700\n"))),
        "modes other than 700"
    );
}

/// The root of the caching tests: `src/in.txt` and `src/lib.txt`.
fn two_file_root(server: &Fake) -> re::Directory {
    let file = |name: &str, bytes: &[u8]| re::FileNode {
        name: name.into(),
        digest: Some(proto(&server.put(bytes))),
        is_executable: false,
    };
    re::Directory {
        directories: vec![re::DirectoryNode {
            name: "src".into(),
            digest: Some(proto(&server.put_message(&re::Directory {
                files: vec![file("in.txt", b"input\n"), file("lib.txt", b"library\n")],
                ..Default::default()
            }))),
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_fetches_each_input_once_and_evicts_beyond_its_limit() {
    let (server, scratch) = (fake(), Scratch::new());
    let root = two_file_root(&server);
    // Two actions over the same inputs, differing in their commands.
    let actions = |server: &Fake| {
        [
            "cat src/in.txt src/lib.txt > out.txt",
            "cat src/lib.txt > out.txt",
        ]
        .map(|script| action(server, script, "", &["out.txt"], Some(root.clone())))
        .to_vec()
    };
    let worker = |limit: u64| {
        let work = scratch.work();
        move |url: &str| WorkerConfig {
            work_dir: Some(work.clone()),
            cache_size: limit,
            ..WorkerConfig::new(config(url))
        }
    };
    let results = run_leases(&server, worker(1 << 20), actions(&server)).await;
    let calls = || std::mem::take(&mut server.state().calls);
    for (status, result) in &results {
        assert_eq!(status.code, 0, "{status:?}");
        assert_eq!(result.as_ref().unwrap().exit_code, 0);
    }
    assert!(server.uploaded(b"input\nlibrary\n") && server.uploaded(b"library\n"));
    // The first lease reads its command, both directories and both files (one call); the
    // second only its command.
    assert_eq!(calls()["BatchReadBlobs"], 4 + 1);
    // The cached inputs are read-only: a command cannot change them for the leases after it
    // (hard links share the mode).
    let mode = action(
        &server,
        "stat -c %a src/in.txt > out.txt",
        "",
        &["out.txt"],
        Some(root.clone()),
    );
    let results = run_leases(&server, worker(1 << 20), vec![mode]).await;
    assert_eq!(results[0].0.code, 0);
    assert!(server.uploaded(b"444\n"));
    calls();

    // A limit smaller than one lease's inputs: every lease fetches them again.
    let results = run_leases(&server, worker(8), actions(&server)).await;
    assert!(results.iter().all(|(status, _)| status.code == 0));
    assert_eq!(calls()["BatchReadBlobs"], 2 * 4);
}

//! The REAPI client: capabilities, CAS uploads (batched, or ByteStream for large blobs, each
//! blob at most once per process), the action cache, and Execute with WaitExecution to
//! reconnect when the operation stream drops.

use crate::action::{ActionSpec, Blob, BlobData, BuiltAction};
use crate::digest::Digest;
use crate::proto::build::bazel::remote::execution::v2 as re;
use crate::proto::google::bytestream as bs;
use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use prost::Message;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Where the server is and how to talk to it.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    /// `grpc://host:port` or `grpcs://host:port`.
    pub endpoint: String,
    pub instance: String,
    /// PEM file of the roots to trust for grpcs:// (default: the system's roots).
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate and key, for servers that require mutual TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Extra headers on every call, e.g. `authorization: Bearer ...`.
    pub headers: Vec<(String, String)>,
    /// Deadline of each call other than Execute.
    pub timeout: Duration,
    /// Deadline of a whole Execute (queueing plus running).
    pub execute_timeout: Duration,
}

impl RemoteConfig {
    pub fn new(endpoint: &str) -> RemoteConfig {
        RemoteConfig {
            endpoint: endpoint.to_string(),
            instance: String::new(),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            headers: Vec::new(),
            timeout: Duration::from_secs(60),
            execute_timeout: Duration::from_secs(3600),
        }
    }

    pub(crate) async fn channel(&self) -> Result<Channel> {
        let (scheme, rest) = self.endpoint.split_once("://").with_context(|| {
            format!(
                "remote endpoint {} needs grpc:// or grpcs://",
                self.endpoint
            )
        })?;
        let url = match scheme {
            "grpc" | "http" => format!("http://{rest}"),
            "grpcs" | "https" => format!("https://{rest}"),
            other => bail!(
                "remote endpoint scheme {other}:// is not supported (use grpc:// or grpcs://)"
            ),
        };
        let mut endpoint = Endpoint::from_shared(url)?.connect_timeout(Duration::from_secs(10));
        if scheme == "grpcs" || scheme == "https" {
            let mut tls = ClientTlsConfig::new();
            tls = match &self.tls_ca {
                Some(ca) => tls.ca_certificate(Certificate::from_pem(
                    std::fs::read(ca)
                        .with_context(|| format!("cannot read TLS roots {}", ca.display()))?,
                )),
                None => tls.with_native_roots(),
            };
            if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
                tls = tls.identity(Identity::from_pem(
                    std::fs::read(cert)
                        .with_context(|| format!("cannot read {}", cert.display()))?,
                    std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?,
                ));
            }
            endpoint = endpoint.tls_config(tls)?;
        }
        endpoint
            .connect()
            .await
            .with_context(|| format!("cannot connect to {}", self.endpoint))
    }

    /// Wraps a message with this config's headers and `timeout`.
    pub(crate) fn request<T>(&self, message: T, timeout: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        for (name, value) in &self.headers {
            if let (Ok(key), Ok(val)) = (
                tonic::metadata::MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes()),
                tonic::metadata::MetadataValue::try_from(value.as_str()),
            ) {
                request.metadata_mut().insert(key, val);
            }
        }
        let metadata = re::RequestMetadata {
            tool_details: Some(re::ToolDetails {
                tool_name: "thindist".into(),
                tool_version: env!("CARGO_PKG_VERSION").into(),
            }),
            ..Default::default()
        };
        request.metadata_mut().insert_bin(
            "build.bazel.remote.execution.v2.requestmetadata-bin",
            tonic::metadata::MetadataValue::from_bytes(&metadata.encode_to_vec()),
        );
        request
    }
}

/// Why a remote run did not produce a result. `Infrastructure` failures are worth retrying or
/// running locally; a command that ran and failed is not an error at all but an outcome.
#[derive(Debug)]
pub enum RemoteError {
    Infrastructure(anyhow::Error),
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            RemoteError::Infrastructure(e) => write!(f, "{e:#}"),
        }
    }
}

impl RemoteError {
    /// Whether running the action again may succeed: true unless the server refused a call
    /// with a code that says the request itself is wrong (INVALID_ARGUMENT, NOT_FOUND, ...),
    /// which it would refuse again. Failures without a status (a damaged blob, a dropped
    /// stream) count as transient.
    pub fn is_transient(&self) -> bool {
        let RemoteError::Infrastructure(err) = self;
        err.chain()
            .filter_map(|e| e.downcast_ref::<CallFailed>())
            .all(|failed| is_transient(failed.code))
    }
}

impl From<anyhow::Error> for RemoteError {
    fn from(e: anyhow::Error) -> Self {
        RemoteError::Infrastructure(e)
    }
}

/// Action-cache lookups in flight at once while preparing a build.
const LOOKUPS_IN_FLIGHT: usize = 32;

/// Digests per FindMissingBlobs call (about 80 bytes each on the wire).
const DIGESTS_PER_QUERY: usize = 4096;

/// An action built, looked up in the action cache, and with its inputs in the CAS unless its
/// result was found there.
#[derive(Clone, Debug)]
pub struct PreparedAction {
    action_digest: Digest,
    cached: Option<re::ActionResult>,
}

impl PreparedAction {
    pub fn digest(&self) -> &Digest {
        &self.action_digest
    }
}

/// What came back from running an action.
#[derive(Debug)]
pub struct RemoteOutcome {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// (path relative to the working directory, digest).
    pub outputs: Vec<(String, Digest)>,
}

pub struct Client {
    config: RemoteConfig,
    channel: Channel,
    max_batch_bytes: usize,
    /// Blobs known to be in the CAS, each behind a lock so concurrent jobs upload it once.
    present: Mutex<HashMap<String, Arc<tokio::sync::Mutex<bool>>>>,
    bytes_uploaded: AtomicU64,
}

/// A call the server answered with an error status, kept as a type (not only as text) so that
/// [`RemoteError::is_transient`] can tell from its code whether to try again.
#[derive(Debug)]
pub struct CallFailed {
    pub what: String,
    pub code: tonic::Code,
    pub message: String,
}

impl std::fmt::Display for CallFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}: {} ({:?})", self.what, self.message, self.code)
    }
}

impl std::error::Error for CallFailed {}

fn call_failed(what: &str, code: tonic::Code, message: &str) -> anyhow::Error {
    CallFailed {
        what: what.to_string(),
        code,
        message: message.to_string(),
    }
    .into()
}

fn status_err(what: &str, status: tonic::Status) -> anyhow::Error {
    call_failed(what, status.code(), status.message())
}

/// Whether a call that failed with `code` may succeed if sent again unchanged: the server was
/// busy ("Concurrent RPC limit exceeded" is RESOURCE_EXHAUSTED in BuildGrid), unreachable for a
/// moment, or gave up. Anything else (INVALID_ARGUMENT, NOT_FOUND, ...) says the request itself
/// is wrong, and sending it again only delays the error.
pub fn is_transient(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::ResourceExhausted
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Aborted
    )
}

/// Attempts of one call before a transient failure becomes an error.
const CALL_ATTEMPTS: u32 = 5;

/// Runs `call` until it succeeds, fails for good, or has failed transiently `CALL_ATTEMPTS`
/// times, sleeping 100 ms, 200 ms, ... in between. `call` builds its request afresh each time
/// because a sent request is consumed.
async fn with_retries<T, F, Fut>(what: &str, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
{
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(status) if is_transient(status.code()) && attempt < CALL_ATTEMPTS => {
                tracing::debug!(
                    "{what} failed ({:?}: {}); retrying in {delay:?}",
                    status.code(),
                    status.message()
                );
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            Err(status) => return Err(status_err(what, status)),
        }
    }
}

/// Turns the first transient per-blob status of a batch response into the error of the whole
/// call, so that [`with_retries`] sends the batch again.
fn transient_blob_status<'a>(
    statuses: impl IntoIterator<Item = Option<&'a crate::proto::google::rpc::Status>>,
) -> std::result::Result<(), tonic::Status> {
    for status in statuses.into_iter().flatten() {
        let code = tonic::Code::from(status.code);
        if is_transient(code) {
            return Err(tonic::Status::new(code, status.message.clone()));
        }
    }
    Ok(())
}

impl Client {
    /// Connects and asks the server's capabilities (SHA-256 must be supported).
    pub async fn connect(config: RemoteConfig) -> Result<Client> {
        let channel = config.channel().await?;
        let mut caps_client = re::capabilities_client::CapabilitiesClient::new(channel.clone());
        let caps = caps_client
            .get_capabilities(config.request(
                re::GetCapabilitiesRequest {
                    instance_name: config.instance.clone(),
                },
                config.timeout,
            ))
            .await
            .map_err(|s| status_err(&format!("GetCapabilities on {}", config.endpoint), s))?
            .into_inner();
        let cache = caps.cache_capabilities.unwrap_or_default();
        if !cache.digest_functions.is_empty()
            && !cache
                .digest_functions
                .contains(&(re::digest_function::Value::Sha256 as i32))
        {
            bail!("{} does not support SHA-256 digests", config.endpoint);
        }
        let max_batch_bytes = match cache.max_batch_total_size_bytes {
            n if n > 0 => n as usize,
            _ => 4 * 1024 * 1024,
        };
        Ok(Client {
            config,
            channel,
            max_batch_bytes,
            present: Mutex::new(HashMap::new()),
            bytes_uploaded: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &RemoteConfig {
        &self.config
    }

    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Bytes this client has sent to the CAS so far.
    pub fn bytes_uploaded(&self) -> u64 {
        self.bytes_uploaded.load(Ordering::Relaxed)
    }

    /// Sends blobs the server cannot have yet (a command's outputs) without asking first:
    /// a FindMissingBlobs would cost the server as much as the upload. Empty blobs are never
    /// sent; every server has them.
    pub async fn upload_new(&self, blobs: &[Blob]) -> Result<()> {
        let to_send: Vec<&Blob> = blobs.iter().filter(|b| b.digest.size > 0).collect();
        self.send_blobs(&to_send).await
    }

    /// Makes sure every blob is in the CAS, uploading only those the server lacks and that no
    /// other job of this process has sent already.
    pub async fn upload(&self, blobs: &[Blob]) -> Result<()> {
        let mut unique: Vec<&Blob> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for b in blobs {
            if seen.insert(b.digest.hash.clone()) {
                unique.push(b);
            }
        }
        // Lock in hash order: two jobs sharing blobs can never wait on each other in a cycle.
        unique.sort_by(|a, b| a.digest.hash.cmp(&b.digest.hash));
        let cells: Vec<Arc<tokio::sync::Mutex<bool>>> = {
            let mut present = self.present.lock().unwrap();
            unique
                .iter()
                .map(|b| present.entry(b.digest.hash.clone()).or_default().clone())
                .collect()
        };
        let mut guards = Vec::with_capacity(cells.len());
        for cell in &cells {
            guards.push(cell.clone().lock_owned().await);
        }
        let todo: Vec<&Blob> = unique
            .iter()
            .zip(&guards)
            .filter(|(_, g)| !***g)
            .map(|(b, _)| *b)
            .collect();
        if !todo.is_empty() {
            let missing = self.find_missing(todo.iter().map(|b| &b.digest)).await?;
            let to_send: Vec<&Blob> = todo
                .into_iter()
                .filter(|b| missing.contains(&b.digest))
                .collect();
            self.send_blobs(&to_send).await?;
        }
        for mut guard in guards {
            *guard = true;
        }
        Ok(())
    }

    fn cas(
        &self,
    ) -> re::content_addressable_storage_client::ContentAddressableStorageClient<Channel> {
        re::content_addressable_storage_client::ContentAddressableStorageClient::new(
            self.channel.clone(),
        )
    }

    async fn find_missing<'a>(
        &self,
        digests: impl Iterator<Item = &'a Digest>,
    ) -> Result<std::collections::HashSet<Digest>> {
        let digests: Vec<re::Digest> = digests.map(Digest::to_proto).collect();
        let mut missing = std::collections::HashSet::new();
        for chunk in digests.chunks(DIGESTS_PER_QUERY) {
            let request = re::FindMissingBlobsRequest {
                instance_name: self.config.instance.clone(),
                blob_digests: chunk.to_vec(),
                digest_function: re::digest_function::Value::Sha256 as i32,
            };
            let response = with_retries("FindMissingBlobs", || {
                let mut cas = self.cas();
                let request = self.config.request(request.clone(), self.config.timeout);
                async move { cas.find_missing_blobs(request).await }
            })
            .await?
            .into_inner();
            // Only membership matters: a malformed digest matches none of ours and is ignored.
            missing.extend(
                response
                    .missing_blob_digests
                    .iter()
                    .filter_map(|d| Digest::parse(d).ok()),
            );
        }
        Ok(missing)
    }

    async fn send_blobs(&self, blobs: &[&Blob]) -> Result<()> {
        let mut batch: Vec<re::batch_update_blobs_request::Request> = Vec::new();
        let mut batch_bytes = 0usize;
        for blob in blobs {
            let data = match &blob.data {
                BlobData::Bytes(b) => b.clone(),
                BlobData::File(p) => tokio::fs::read(p)
                    .await
                    .with_context(|| format!("cannot read {}", p.display()))?,
            };
            self.bytes_uploaded
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            // Leave room for the request's own framing.
            if data.len() + 1024 > self.max_batch_bytes {
                self.bytestream_write(&blob.digest, data).await?;
                continue;
            }
            if batch_bytes + data.len() + 1024 > self.max_batch_bytes {
                self.batch_update(std::mem::take(&mut batch)).await?;
                batch_bytes = 0;
            }
            batch_bytes += data.len() + 100;
            batch.push(re::batch_update_blobs_request::Request {
                digest: Some(blob.digest.to_proto()),
                data,
            });
        }
        if !batch.is_empty() {
            self.batch_update(batch).await?;
        }
        Ok(())
    }

    async fn batch_update(
        &self,
        requests: Vec<re::batch_update_blobs_request::Request>,
    ) -> Result<()> {
        let request = re::BatchUpdateBlobsRequest {
            instance_name: self.config.instance.clone(),
            requests,
            digest_function: re::digest_function::Value::Sha256 as i32,
        };
        let response = with_retries("BatchUpdateBlobs", || {
            let mut cas = self.cas();
            let request = self.config.request(request.clone(), self.config.timeout);
            async move {
                let response = cas.batch_update_blobs(request).await?.into_inner();
                transient_blob_status(response.responses.iter().map(|r| r.status.as_ref()))?;
                Ok(response)
            }
        })
        .await?;
        for r in response.responses {
            if let Some(status) = r.status.filter(|s| s.code != 0) {
                let hash = r.digest.map(|d| d.hash).unwrap_or_default();
                return Err(call_failed(
                    &format!("uploading blob {hash}"),
                    tonic::Code::from(status.code),
                    &status.message,
                ));
            }
        }
        Ok(())
    }

    fn resource_prefix(&self) -> String {
        if self.config.instance.is_empty() {
            String::new()
        } else {
            format!("{}/", self.config.instance)
        }
    }

    async fn bytestream_write(&self, digest: &Digest, data: Vec<u8>) -> Result<()> {
        let resource = format!(
            "{}uploads/{}/blobs/{}/{}",
            self.resource_prefix(),
            uuid::Uuid::new_v4(),
            digest.hash,
            digest.size
        );
        const CHUNK: usize = 1 << 20;
        let total = data.len();
        let mut requests = Vec::new();
        let mut offset = 0;
        loop {
            let end = (offset + CHUNK).min(total);
            requests.push(bs::WriteRequest {
                resource_name: if offset == 0 {
                    resource.clone()
                } else {
                    String::new()
                },
                write_offset: offset as i64,
                finish_write: end == total,
                data: data[offset..end].to_vec(),
            });
            offset = end;
            if offset == total {
                break;
            }
        }
        let response = with_retries("ByteStream.Write", || {
            let mut client = bs::byte_stream_client::ByteStreamClient::new(self.channel.clone());
            let request = self
                .config
                .request(tokio_stream::iter(requests.clone()), self.config.timeout);
            async move { client.write(request).await }
        })
        .await?
        .into_inner();
        if response.committed_size != total as i64 {
            bail!(
                "ByteStream.Write of {digest} committed {} of {total} bytes",
                response.committed_size
            );
        }
        Ok(())
    }

    /// Reads a blob from the CAS and checks its size and hash against `digest`. The digest's
    /// size usually comes from the server too, so it only bounds the read: nothing is reserved
    /// for it, and a stream that runs past it is cut off.
    pub async fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        Ok(self
            .read_blobs(std::slice::from_ref(digest))
            .await?
            .remove(0))
    }

    /// Reads blobs as [`Client::read_blob`] does, in as few calls as the server's batch limit
    /// allows (ByteStream for those above it), in the order of `digests`.
    pub async fn read_blobs(&self, digests: &[Digest]) -> Result<Vec<Vec<u8>>> {
        let mut found: HashMap<&Digest, Vec<u8>> = HashMap::new();
        let mut batch: Vec<&Digest> = Vec::new();
        let mut batch_bytes = 0u64;
        for digest in digests {
            let Ok(size) = u64::try_from(digest.size) else {
                bail!("cannot read blob {digest}: negative size");
            };
            if size == 0 || found.contains_key(digest) || batch.contains(&digest) {
                continue;
            }
            if size.saturating_add(1024) > self.max_batch_bytes as u64 {
                let data = self.bytestream_read(digest, size).await?;
                found.insert(digest, data);
                continue;
            }
            if batch_bytes + size + 1024 > self.max_batch_bytes as u64 {
                found.extend(self.batch_read(&std::mem::take(&mut batch)).await?);
                batch_bytes = 0;
            }
            batch_bytes += size + 100;
            batch.push(digest);
        }
        if !batch.is_empty() {
            found.extend(self.batch_read(&batch).await?);
        }
        digests
            .iter()
            .map(|digest| {
                let data = found.get(digest).cloned().unwrap_or_default();
                digest.verify(&data)?;
                Ok(data)
            })
            .collect()
    }

    async fn batch_read<'a>(&self, digests: &[&'a Digest]) -> Result<Vec<(&'a Digest, Vec<u8>)>> {
        let request = re::BatchReadBlobsRequest {
            instance_name: self.config.instance.clone(),
            digests: digests.iter().map(|d| d.to_proto()).collect(),
            digest_function: re::digest_function::Value::Sha256 as i32,
        };
        let response = with_retries("BatchReadBlobs", || {
            let mut cas = self.cas();
            let request = self.config.request(request.clone(), self.config.timeout);
            async move {
                let response = cas.batch_read_blobs(request).await?.into_inner();
                transient_blob_status(response.responses.iter().map(|r| r.status.as_ref()))?;
                Ok(response)
            }
        })
        .await?;
        let mut by_digest: HashMap<(String, i64), re::batch_read_blobs_response::Response> =
            response
                .responses
                .into_iter()
                .filter_map(|r| {
                    let d = r.digest.as_ref()?;
                    Some(((d.hash.clone(), d.size_bytes), r))
                })
                .collect();
        digests
            .iter()
            .map(|&digest| {
                let r = by_digest
                    .remove(&(digest.hash.clone(), digest.size))
                    .with_context(|| format!("BatchReadBlobs did not return blob {digest}"))?;
                if let Some(status) = r.status.filter(|s| s.code != 0) {
                    return Err(call_failed(
                        &format!("reading blob {digest}"),
                        tonic::Code::from(status.code),
                        &status.message,
                    ));
                }
                Ok((digest, r.data))
            })
            .collect()
    }

    async fn bytestream_read(&self, digest: &Digest, size: u64) -> Result<Vec<u8>> {
        let resource = format!(
            "{}blobs/{}/{}",
            self.resource_prefix(),
            digest.hash,
            digest.size
        );
        with_retries("ByteStream.Read", || {
            let mut client = bs::byte_stream_client::ByteStreamClient::new(self.channel.clone());
            let request = self.config.request(
                bs::ReadRequest {
                    resource_name: resource.clone(),
                    read_offset: 0,
                    read_limit: 0,
                },
                self.config.timeout,
            );
            async move {
                let mut stream = client.read(request).await?.into_inner();
                let mut data = Vec::new();
                // Stop once past the size: the caller's check reports the excess.
                while data.len() as u64 <= size {
                    match stream.next().await {
                        Some(chunk) => data.extend(chunk?.data),
                        None => break,
                    }
                }
                Ok(data)
            }
        })
        .await
    }

    async fn get_action_result(&self, action: &Digest) -> Result<Option<re::ActionResult>> {
        let request = re::GetActionResultRequest {
            instance_name: self.config.instance.clone(),
            action_digest: Some(action.to_proto()),
            inline_stdout: true,
            inline_stderr: true,
            digest_function: re::digest_function::Value::Sha256 as i32,
        };
        with_retries("GetActionResult", || {
            let mut ac = re::action_cache_client::ActionCacheClient::new(self.channel.clone());
            let request = self.config.request(request.clone(), self.config.timeout);
            async move {
                match ac.get_action_result(request).await {
                    Ok(r) => Ok(Some(r.into_inner())),
                    Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
                    Err(s) => Err(s),
                }
            }
        })
        .await
    }

    /// Runs an Execute, following its operation stream to the end and reconnecting with
    /// WaitExecution if the stream drops before the operation is done.
    async fn execute(&self, action: &Digest) -> Result<re::ExecuteResponse> {
        let mut exec = re::execution_client::ExecutionClient::new(self.channel.clone());
        let request = re::ExecuteRequest {
            instance_name: self.config.instance.clone(),
            // Every action is looked up in the action cache before it is executed
            // (`prepare`): the server need not look again.
            skip_cache_lookup: true,
            action_digest: Some(action.to_proto()),
            execution_policy: None,
            results_cache_policy: None,
            digest_function: re::digest_function::Value::Sha256 as i32,
        };
        let mut stream = exec
            .execute(self.config.request(request, self.config.execute_timeout))
            .await
            .map_err(|s| status_err("Execute", s))?
            .into_inner();
        let mut operation_name = None;
        for _attempt in 0..5 {
            loop {
                match stream.next().await {
                    Some(Ok(op)) => {
                        operation_name = Some(op.name.clone());
                        if op.done {
                            return decode_operation(op);
                        }
                    }
                    Some(Err(status)) if operation_name.is_none() => {
                        return Err(status_err("Execute", status))
                    }
                    Some(Err(_)) | None => break,
                }
            }
            let name = operation_name
                .clone()
                .context("the Execute stream ended before naming its operation")?;
            tracing::debug!("operation stream for {name} dropped; reconnecting with WaitExecution");
            stream = exec
                .wait_execution(self.config.request(
                    re::WaitExecutionRequest { name },
                    self.config.execute_timeout,
                ))
                .await
                .map_err(|s| status_err("WaitExecution", s))?
                .into_inner();
        }
        bail!("the operation stream for {action} kept dropping")
    }

    /// Builds `specs` and readies them to execute: every action is looked up in the action
    /// cache first (up to [`LOOKUPS_IN_FLIGHT`] at once), and only the inputs of those not found
    /// there are uploaded, all together: one FindMissingBlobs per few thousand blobs, large
    /// batches, ByteStream for large blobs. This is the whole build's CAS traffic; each action
    /// then needs only its Execute.
    pub async fn prepare(
        &self,
        specs: &[ActionSpec],
    ) -> std::result::Result<Vec<PreparedAction>, RemoteError> {
        let built: Vec<BuiltAction> = specs.iter().map(ActionSpec::build).collect();
        // The futures are made first: a stream over a borrowing closure would not be Send.
        let lookups: Vec<_> = built
            .iter()
            .map(|b| self.get_action_result(&b.action_digest))
            .collect();
        let cached: Vec<Option<re::ActionResult>> = futures_util::stream::iter(lookups)
            .buffered(LOOKUPS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_>>()?;
        let blobs: Vec<Blob> = built
            .iter()
            .zip(&cached)
            .filter(|(_, cached)| cached.is_none())
            .flat_map(|(b, _)| b.blobs.iter().cloned())
            .collect();
        self.upload(&blobs).await?;
        Ok(built
            .into_iter()
            .zip(cached)
            .map(|(b, cached)| PreparedAction {
                action_digest: b.action_digest,
                cached,
            })
            .collect())
    }

    /// Runs an action readied by [`Client::prepare`]: its cached result, or an Execute.
    /// Output files are left in the CAS; fetch them with [`Client::read_blob`].
    pub async fn run_prepared(
        &self,
        action: &PreparedAction,
    ) -> std::result::Result<RemoteOutcome, RemoteError> {
        if let Some(result) = &action.cached {
            return Ok(self.outcome(result.clone()).await?);
        }
        let response = self.execute(&action.action_digest).await?;
        if let Some(status) = response.status.as_ref().filter(|s| s.code != 0) {
            return Err(RemoteError::Infrastructure(call_failed(
                "the server could not run the action",
                tonic::Code::from(status.code),
                &status.message,
            )));
        }
        let result = response
            .result
            .context("Execute finished without an ActionResult")?;
        Ok(self.outcome(result).await?)
    }

    /// Runs `spec` remotely: the action cache first, then uploads of what the server lacks,
    /// then Execute. Output files are left in the CAS; fetch them with [`Client::read_blob`].
    pub async fn run(&self, spec: &ActionSpec) -> std::result::Result<RemoteOutcome, RemoteError> {
        let prepared = self.prepare(std::slice::from_ref(spec)).await?;
        self.run_prepared(&prepared[0]).await
    }

    async fn outcome(&self, result: re::ActionResult) -> Result<RemoteOutcome> {
        let stdout = match (&result.stdout_digest, result.stdout_raw.is_empty()) {
            (Some(d), true) => self.read_blob(&Digest::parse(d)?).await?,
            _ => result.stdout_raw.clone(),
        };
        let stderr = match (&result.stderr_digest, result.stderr_raw.is_empty()) {
            (Some(d), true) => self.read_blob(&Digest::parse(d)?).await?,
            _ => result.stderr_raw.clone(),
        };
        let mut outputs = Vec::new();
        for file in &result.output_files {
            if let Some(d) = &file.digest {
                let digest = Digest::parse(d)
                    .with_context(|| format!("output {} of the action result", file.path))?;
                outputs.push((file.path.clone(), digest));
            }
        }
        Ok(RemoteOutcome {
            exit_code: result.exit_code,
            stdout,
            stderr,
            outputs,
        })
    }
}

fn decode_operation(
    op: crate::proto::google::longrunning::Operation,
) -> Result<re::ExecuteResponse> {
    use crate::proto::google::longrunning::operation::Result as OpResult;
    match op.result {
        Some(OpResult::Response(any)) => {
            re::ExecuteResponse::decode(any.value.as_slice()).context("undecodable ExecuteResponse")
        }
        Some(OpResult::Error(status)) => Err(call_failed(
            &format!("operation {}", op.name),
            tonic::Code::from(status.code),
            &status.message,
        )),
        None => bail!(
            "operation {} finished with neither a response nor an error",
            op.name
        ),
    }
}

//! `airlock watch`: the long-running service. It watches drop folders, hands
//! settled bundles to the same import engine the CLI uses, remembers every
//! outcome in the state directory, and serves metrics, health and an API.
//!
//! Depends on every pipeline stage through [`crate::import`], on
//! [`crate::watch`] for arrivals, [`crate::state`] for memory, and
//! [`crate::metrics`]/[`crate::http`] for reporting.
//!
//! Flow: watcher → bounded queue (arrival order) → at most
//! `imports.concurrency` workers → record → dispose. Transient failures go
//! back into the queue after an exponential backoff with jitter, without a
//! limit in time; permanent ones are rejected once. Credentials the registry
//! refused are not tried again until their files change.

pub mod disposal;
mod queue;
mod reconcile;
mod replicas;
mod worker;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::CredentialFiles;
pub use crate::config::{OnReject, OnSuccess};
use crate::http::{DaemonView, Readiness};
use crate::import::Destination;
use crate::metrics::Metrics;
use crate::plan::Target;
use crate::push::registry::{Credentials, RegistryClient, RetryPolicy};
use crate::state::{BundleRecord, StateStore, Status, WaitingRecord};
use crate::verify::TrustedKeys;
use crate::watch::{ReadyBundle, Unpaired, WatchControl, WatchOptions};

/// Bundles waiting for a worker, at most. Each waiting entry is two paths, so
/// a flood of drops costs little memory, and the watcher simply waits when
/// the queue is full.
pub const QUEUE_CAPACITY: usize = 4096;

/// How long in-flight imports get to finish after SIGTERM. Kubernetes waits
/// 30 s by default before SIGKILL; finishing a few seconds earlier lets the
/// state be written cleanly. An import cut off here resumes on restart.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

/// Everything the daemon needs, resolved and validated.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    /// How to watch.
    pub watch: WatchOptions,
    /// Trusted public key files or directories.
    pub public_keys: Vec<PathBuf>,
    /// Trusted keyless signers (`trust.keyless`).
    pub keyless: Vec<crate::verify::KeylessConfig>,
    /// Where and how to import.
    pub destination: Destination,
    /// Where the registry credentials come from, read again before an
    /// import attempt when they changed (`None` for an `oci:DIR` target).
    pub credential_files: Option<Arc<CredentialFiles>>,
    /// Bundles imported at once.
    pub concurrency: usize,
    /// What to do with imported bundles.
    pub on_success: OnSuccess,
    /// What to do with rejected bundles.
    pub on_reject: OnReject,
    /// Whether each bundle is read once, its signature checked while it is
    /// indexed (`imports.single_read`).
    pub single_read: bool,
    /// First retry delay for transient failures.
    pub retry_initial_backoff: Duration,
    /// Longest retry delay.
    pub retry_max_backoff: Duration,
    /// The state directory.
    pub state_dir: PathBuf,
    /// The HTTP listener address.
    pub listen: SocketAddr,
    /// Basic auth for the console and the API (`http.auth`).
    pub http_auth: crate::config::HttpAuthSection,
    /// Time in-flight imports get after SIGTERM.
    pub shutdown_grace: Duration,
    /// Look at a bundle that failed verification or integrity checks again
    /// after a settle time before rejecting it (`drop.confirm_rejection`).
    pub confirm_rejection: bool,
    /// Finished records older than this are removed (`state.retention`).
    pub retention: Duration,
    /// At most this many records are kept (`state.max_records`).
    pub max_records: usize,
    /// The Kubernetes API: Events and per-bundle Leases.
    pub kube: crate::config::KubeSection,
}

impl DaemonSettings {
    /// Resolves a loaded configuration (reading password files now).
    pub fn from_config(config: &crate::config::DaemonConfig) -> Result<Self, crate::config::Error> {
        Ok(DaemonSettings {
            watch: WatchOptions::from(&config.drop),
            public_keys: config.public_key_paths().to_vec(),
            keyless: config.trust.keyless.clone(),
            destination: Destination {
                plan: config.plan_options()?,
                pack_image_policy: config.registry.pack_image_policy,
                target: config.target()?,
                registry: config.registry_config()?,
                push: config.push_options(),
                limits: config.read_limits(),
                upload_journal: None,
                attestor: config.attestor()?,
            },
            credential_files: config.credential_files()?.map(Arc::new),
            concurrency: config.imports.concurrency,
            on_success: config.imports.on_success,
            on_reject: config.imports.on_reject,
            single_read: config.imports.single_read,
            retry_initial_backoff: config.imports.retry_initial_backoff,
            retry_max_backoff: config.imports.retry_max_backoff,
            state_dir: config.state_dir.clone(),
            listen: config.http.listen,
            http_auth: config.http.auth.clone(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            confirm_rejection: config.drop.confirm_rejection,
            retention: config.state.retention,
            max_records: config.state.max_records,
            kube: config.kube.clone(),
        })
    }
}

/// How often old records are removed (`state.retention`), besides at start.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The trusted keys could not be loaded.
    #[error(transparent)]
    Keys(#[from] crate::verify::Error),
    /// The state directory is unusable.
    #[error(transparent)]
    State(#[from] crate::state::Error),
    /// The registry client could not be built (CA files, URL).
    #[error(transparent)]
    Registry(#[from] crate::push::Error),
    /// The htpasswd file of `http.auth` is unusable.
    #[error(transparent)]
    HttpAuth(#[from] crate::http::AuthError),
    /// A drop folder does not exist or is not a folder.
    #[error("drop folder {path} is not a readable directory")]
    DropFolder {
        /// The folder.
        path: String,
    },
    /// The Kubernetes client could not be set up.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::Error),
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Every start-up failure is a configuration problem.
    pub fn class(&self) -> crate::FailureClass {
        crate::FailureClass::Config
    }
}

/// What the workers share.
pub(crate) struct Shared {
    store: StateStore,
    keys: Arc<TrustedKeys>,
    destination: Destination,
    credential_files: Option<Arc<CredentialFiles>>,
    metrics: Arc<Metrics>,
    on_success: OnSuccess,
    on_reject: OnReject,
    single_read: bool,
    retry: RetryPolicy,
    watch_control: mpsc::UnboundedSender<WatchControl>,
    in_progress: AtomicI64,
    /// How long to wait before a second look at a failed bundle; `None`
    /// when rejections are not confirmed.
    confirm_rejection: Option<Duration>,
    /// One lock per content being handled, so two copies of the same bytes
    /// under different names are never imported at once.
    content_locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    /// Final import records the state directory refused, kept until a retry
    /// writes them (so the retry does not push again).
    unsaved: Mutex<HashMap<String, BundleRecord>>,
    /// Whether bundle paths that are symbolic links are opened (`drop.follow_symlinks`).
    symlinks: crate::verify::Symlinks,
    /// The other replicas, through the Kubernetes API, when it is used.
    replicas: Option<replicas::Replicas>,
    /// The progress of each import under way, by bundle id, for the API.
    live: Mutex<HashMap<String, crate::progress::Progress>>,
    /// Credentials the registry refused: no import is tried with them again,
    /// so a wrong password costs one refused login, not one per backoff
    /// (registries backed by a directory lock accounts after a few). Cleared
    /// when the credential files hold other ones.
    refused_credentials: Mutex<Option<Credentials>>,
}

/// Shows an import's progress through the API until dropped.
struct ShownProgress<'a> {
    shared: &'a Shared,
    id: String,
}

impl Drop for ShownProgress<'_> {
    fn drop(&mut self) {
        self.shared
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

impl Shared {
    fn in_progress_changed(&self, delta: i64) {
        let now = self.in_progress.fetch_add(delta, Ordering::Relaxed) + delta;
        self.metrics
            .set_in_progress(usize::try_from(now).unwrap_or(0));
    }

    /// The delay before retrying a bundle after its `attempt`-th failure:
    /// the import retry policy (exponential with jitter, capped, no limit).
    fn backoff(&self, attempt: u32) -> Duration {
        queue::backoff(&self.retry, attempt)
    }

    /// Where and how the next import attempt writes, with the registry
    /// credentials as their files hold them now.
    fn destination_now(&self) -> Destination {
        let mut destination = self.destination.clone();
        if let Some(files) = &self.credential_files {
            destination.registry.credentials = files.current();
        }
        destination
    }

    /// Whether the credentials the next attempt would use are the ones the
    /// registry refused.
    fn credentials_refused(&self) -> bool {
        let refused = self
            .refused_credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match (&*refused, &self.credential_files) {
            (Some(refused), Some(files)) => *refused == files.current(),
            (Some(refused), None) => *refused == self.destination.registry.credentials,
            (None, _) => false,
        }
    }

    /// Remembers that the registry refused `credentials`.
    fn refuse_credentials(&self, credentials: Credentials) {
        *self
            .refused_credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(credentials);
    }

    /// Drops the file memo of a bundle whose files were moved or deleted.
    fn forget_file(&self, bundle: &Path) {
        if let Err(e) = self.store.forget_file(bundle) {
            tracing::warn!(error = %e, "cannot update the file memo");
        }
    }

    /// Lets the API show `progress` as the progress of import `id` until the
    /// returned guard is dropped.
    fn show_progress(&self, id: &str, progress: &crate::progress::Progress) -> ShownProgress<'_> {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), progress.clone());
        ShownProgress {
            shared: self,
            id: id.to_owned(),
        }
    }

    /// Waits until no other worker handles content `id`, then holds it.
    async fn hold_content(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.content_locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.retain(|_, lock| lock.strong_count() > 0);
            match locks.get(id).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(id.to_owned(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        match Arc::clone(&lock).try_lock_owned() {
            Ok(guard) => guard,
            Err(_) => {
                tracing::info!(
                    "the same content is being handled under another name; waiting for it"
                );
                lock.lock_owned().await
            }
        }
    }

    fn keep_unsaved(&self, record: BundleRecord) {
        self.unsaved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(record.id.clone(), record);
    }

    fn take_unsaved(&self, id: &str) -> Option<BundleRecord> {
        self.unsaved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }
}

/// The watcher's state as `/readyz` and `airlock_watcher_up` show it.
struct WatcherStatus {
    up: AtomicBool,
    metrics: Arc<Metrics>,
}

impl crate::watch::WatchObserver for WatcherStatus {
    fn watching(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            self.metrics.set_watcher_up(up);
        }
    }

    fn listed(&self) {
        self.metrics.drop_listed();
    }
}

/// The readiness and API view the HTTP server shows.
struct View {
    shared: Arc<Shared>,
    watcher: Arc<WatcherStatus>,
    registry: Option<RegistryClient>,
    waiting: watch::Receiver<Vec<Unpaired>>,
}

impl DaemonView for View {
    fn imports(&self, limit: usize, after: Option<&str>) -> Vec<BundleRecord> {
        self.shared.store.recent(limit, after)
    }

    fn waiting(&self) -> Vec<WaitingRecord> {
        self.waiting
            .borrow()
            .iter()
            .map(|file| WaitingRecord {
                status: Status::Waiting,
                names: file
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .into_iter()
                    .collect(),
                path: file.path.display().to_string(),
                size: file.state.size,
                first_seen: file.since_wall_clock(),
                missing: file.missing.clone(),
            })
            .collect()
    }

    fn import(&self, id: &str) -> Option<BundleRecord> {
        self.shared.store.get(id)
    }

    fn readiness(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Readiness> + Send + '_>> {
        Box::pin(async move {
            let watcher_running = self.watcher.up.load(Ordering::Relaxed);
            let state = self.shared.store.check_writable();
            let registry = match &self.registry {
                Some(client) => client
                    .ping()
                    .await
                    .map_err(|e| crate::report::error_chain(&e)),
                None => Ok(()),
            };
            let kube = self.shared.replicas.as_ref().map(|r| r.problem());
            let detail = [
                state.as_ref().err().map(|e| e.to_string()),
                registry.as_ref().err().cloned(),
                kube.clone().flatten(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>();
            Readiness {
                watcher_running,
                state_writable: state.is_ok(),
                registry_reachable: registry.is_ok(),
                kube_api_reachable: kube.map(|problem| problem.is_none()),
                detail: (!detail.is_empty()).then(|| detail.join("; ")),
            }
        })
    }

    fn packs(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<crate::http::PackCatalog, String>> + Send + '_>,
    > {
        Box::pin(async move {
            let destination = &self.shared.destination;
            let listed = match (&destination.target, &self.registry) {
                (Target::Layout { dir }, _) => {
                    let dir = dir.clone();
                    tokio::task::spawn_blocking(move || crate::push::catalog::layout_packs(&dir))
                        .await
                        .map_err(|e| e.to_string())?
                }
                (target, Some(client)) => {
                    crate::push::catalog::registry_packs(
                        client,
                        target,
                        &destination.plan,
                        crate::push::catalog::CatalogLimits::default(),
                    )
                    .await
                }
                (Target::Registry { .. }, None) => {
                    return Err("no registry client".to_owned());
                }
            };
            listed.map_err(|e| crate::report::error_chain(&e))
        })
    }

    fn images(
        &self,
        query: crate::http::ImageQuery,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<crate::http::ImageListing, String>> + Send + '_,
        >,
    > {
        Box::pin(async move {
            let listed = match (&self.shared.destination.target, &self.registry) {
                (Target::Layout { dir }, _) => {
                    let dir = dir.clone();
                    tokio::task::spawn_blocking(move || {
                        crate::push::repositories::layout_images(&dir, &query)
                    })
                    .await
                    .map_err(|e| e.to_string())?
                }
                (Target::Registry { .. }, Some(client)) => {
                    crate::push::repositories::registry_images(client, &query).await
                }
                (Target::Registry { .. }, None) => {
                    return Err("no registry client".to_owned());
                }
            };
            listed.map_err(|e| crate::report::error_chain(&e))
        })
    }

    fn present_in_target(
        &self,
        images: Vec<String>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<std::collections::HashSet<String>, String>>
                + Send
                + '_,
        >,
    > {
        Box::pin(async move {
            let target = &self.shared.destination.target;
            let placed = images.into_iter().filter_map(|image| {
                let reference = crate::read::names::parse_full(&image).ok()?;
                let placement = crate::plan::mirror_placement(target, &reference).ok()?;
                Some((image, reference, placement))
            });
            let mut present = std::collections::HashSet::new();
            match (target, &self.registry) {
                (Target::Layout { dir }, _) => {
                    let dir = dir.clone();
                    let names = tokio::task::spawn_blocking(move || {
                        crate::push::repositories::layout_names(&dir)
                    })
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| crate::report::error_chain(&e))?;
                    present.extend(
                        placed
                            .filter(|(_, _, placement)| names.contains(&placement.target_ref))
                            .map(|(image, _, _)| image),
                    );
                }
                (Target::Registry { .. }, Some(client)) => {
                    for (image, reference, placement) in placed {
                        let Some(at) = placement
                            .tag
                            .clone()
                            .or_else(|| reference.digest().map(str::to_owned))
                        else {
                            continue;
                        };
                        let digest = client
                            .manifest_digest(&placement.repository, &at)
                            .await
                            .map_err(|e| crate::report::error_chain(&e))?;
                        if digest.is_some() {
                            present.insert(image);
                        }
                    }
                }
                (Target::Registry { .. }, None) => return Err("no registry client".to_owned()),
            }
            Ok(present)
        })
    }

    fn progress(&self, id: &str) -> Option<crate::http::ImportProgress> {
        self.shared
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(crate::http::ImportProgress::from)
    }
}

/// Runs the daemon until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn run(settings: DaemonSettings) -> Result<(), Error> {
    for dir in &settings.watch.dirs {
        if !dir.is_dir() {
            return Err(Error::DropFolder {
                path: dir.display().to_string(),
            });
        }
    }
    let keys = TrustedKeys::load_with_keyless(&settings.public_keys, &settings.keyless)?;
    let auth = match &settings.http_auth.htpasswd_file {
        Some(path) => Some(crate::http::BasicAuth::load(
            path,
            &settings.http_auth.open_paths,
        )?),
        None => None,
    };
    tracing::info!(
        keys = keys.len(),
        keyless = keys.keyless().len(),
        "trusted keys loaded"
    );
    let store = StateStore::open(&settings.state_dir)?;
    let cluster = crate::cluster::Cluster::connect(&settings.kube).await?;
    let replicas = cluster.as_ref().map(replicas::Replicas::new);
    let metrics = Arc::new(Metrics::new());
    // The last success survives restarts, so "no import for N hours" alerts
    // do not fire (or go quiet) because the pod was rescheduled.
    if let Some(at) = store.last_imported() {
        metrics.mark_success(at);
    }
    let mut destination = settings.destination.clone();
    // Sessions of large uploads, so an import cut off mid-blob continues
    // from the offset the registry acknowledges.
    destination.upload_journal = Some(Arc::new(crate::state::UploadSessions::open(
        &settings.state_dir,
    )?));
    let observer: Arc<dyn crate::push::registry::RequestObserver> = Arc::clone(&metrics) as _;
    destination.registry.observer = Some(crate::push::registry::ObserverHandle::new(observer));
    let registry = match &destination.target {
        Target::Registry { .. } => Some(RegistryClient::new(destination.registry.clone())?),
        Target::Layout { .. } => None,
    };
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| Error::Listen {
            address: settings.listen,
            source,
        })?;
    tracing::info!(address = %settings.listen, "serving /metrics, /healthz, /readyz and /api/v1/imports");

    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        store,
        keys: Arc::new(keys),
        destination,
        credential_files: settings.credential_files.clone(),
        metrics: Arc::clone(&metrics),
        on_success: settings.on_success,
        on_reject: settings.on_reject,
        single_read: settings.single_read,
        retry: RetryPolicy {
            max_attempts: u32::MAX,
            initial_backoff: settings.retry_initial_backoff,
            max_backoff: settings.retry_max_backoff,
        },
        watch_control: control_tx,
        in_progress: AtomicI64::new(0),
        confirm_rejection: settings
            .confirm_rejection
            .then_some(settings.watch.settle_time),
        content_locks: Mutex::new(HashMap::new()),
        unsaved: Mutex::new(HashMap::new()),
        symlinks: if settings.watch.follow_symlinks {
            crate::verify::Symlinks::Follow
        } else {
            crate::verify::Symlinks::Refuse
        },
        replicas,
        live: Mutex::new(HashMap::new()),
        refused_credentials: Mutex::new(None),
    });
    let reconciling = Arc::clone(&shared);
    if let Err(e) = tokio::task::spawn_blocking(move || reconcile::run(&reconciling)).await {
        tracing::error!(error = %e, "finishing interrupted disposals failed");
    }

    let unfinished = shared.store.unfinished();
    if !unfinished.is_empty() {
        tracing::info!(
            bundles = unfinished.len(),
            "resuming imports interrupted by the last stop"
        );
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let (waiting_tx, waiting_rx) = watch::channel(Vec::new());
    let retention = tokio::spawn(keep_records_bounded(
        Arc::clone(&shared),
        settings.retention,
        settings.max_records,
        stop_rx.clone(),
    ));
    let watcher_status = Arc::new(WatcherStatus {
        up: AtomicBool::new(false),
        metrics: Arc::clone(&metrics),
    });
    let view = Arc::new(View {
        shared: Arc::clone(&shared),
        watcher: Arc::clone(&watcher_status),
        registry,
        waiting: waiting_rx.clone(),
    });
    tokio::spawn(count_waiting(waiting_rx, Arc::clone(&metrics)));
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(crate::http::serve_guarded(
        listener,
        Arc::clone(&metrics),
        view,
        auth,
        async move {
            let _ = http_stop.wait_for(|stopped| *stopped).await;
        },
    ));

    let sweeper = shared.replicas.clone().map(|replicas| {
        let stop = stop_rx.clone();
        tokio::spawn(async move { replicas.sweep(stop).await })
    });

    let (ready_tx, ready_rx) = mpsc::channel::<ReadyBundle>(QUEUE_CAPACITY);
    let watcher = tokio::spawn(crate::watch::run(
        settings.watch.clone(),
        ready_tx.clone(),
        waiting_tx,
        control_rx,
        watcher_status as Arc<dyn crate::watch::WatchObserver>,
        stop_rx.clone(),
    ));
    let queue = queue::Queue {
        metrics: Arc::clone(&metrics),
        retry: shared.retry,
        concurrency: settings.concurrency,
        grace: settings.shutdown_grace,
    };
    let workers = Arc::clone(&shared);
    let dispatcher = tokio::spawn(queue.run(ready_rx, ready_tx, stop_rx, move |bundle| {
        worker::handle(Arc::clone(&workers), bundle)
    }));

    shutdown_signal().await;
    tracing::info!("stop requested; finishing in-flight imports");
    let _ = stop_tx.send(true);
    let _ = dispatcher.await;
    let _ = watcher.await;
    let _ = retention.await;
    let _ = http.await;
    if let Some(sweeper) = sweeper {
        let _ = sweeper.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Keeps `airlock_bundles_waiting` equal to the number of files the watcher
/// reports waiting for their partner, until the watcher stops.
async fn count_waiting(mut waiting: watch::Receiver<Vec<Unpaired>>, metrics: Arc<Metrics>) {
    loop {
        let count = waiting.borrow_and_update().len();
        metrics.set_waiting(count);
        if waiting.changed().await.is_err() {
            return;
        }
    }
}

/// Removes old records at start and then every [`RETENTION_INTERVAL`].
async fn keep_records_bounded(
    shared: Arc<Shared>,
    retention: Duration,
    max_records: usize,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let pruning = Arc::clone(&shared);
        let pruned = tokio::task::spawn_blocking(move || {
            pruning
                .store
                .prune(std::time::SystemTime::now(), retention, max_records)
        })
        .await;
        match pruned {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot remove old records"),
            Err(e) => tracing::warn!(error = %e, "removing old records failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(RETENTION_INTERVAL) => {}
            () = stopped(&mut stop) => return,
        }
    }
}

/// Resolves once the daemon is asked to stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Resolves on SIGTERM (Kubernetes, systemd) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the daemon");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

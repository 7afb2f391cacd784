//! `titan-dr backup ...`: the snapshot store from the command line, without a cluster, so
//! that an operator on a broken system can still list, check and get back the data. One
//! function per subcommand; the work is in [`crate::backup`], here the arguments and what
//! is printed. Any failure exits 1, with why on stderr.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use k8s_openapi::jiff::Timestamp;

use super::Exit;
use crate::api::duration::RetentionAge;
use crate::backup::manifest::{Owner, SnapshotKind};
use crate::backup::offsite::{Offsite, S3Args};
use crate::backup::remote::Remote;
use crate::backup::restore::{
    Chosen, ExpectedKeys, Replication, SourceArgs, check_keys, choose, replicate, shutdown_nosave,
    wait_restarted,
};
use crate::backup::retention::RetentionPolicy;
use crate::backup::store::format_databases;
use crate::backup::{BackupKey, Manifest, Store, StoreError, config_archive};
use crate::redis::{RedisTarget, SnapshotOptions};

/// Arguments of `titan-dr backup`.
#[derive(Args, Debug)]
pub struct BackupCommand {
    #[command(subcommand)]
    command: BackupSubcommand,
}

#[derive(Subcommand, Debug)]
enum BackupSubcommand {
    /// List the snapshots of a folder, newest first, and any incomplete ones.
    List(ListArgs),
    /// Check a snapshot completely: manifest, size, checksums, decryption, RDB CRC and keys.
    Verify(VerifyArgs),
    /// Verify a snapshot, then load it into Redis: write its decrypted content to a file
    /// (e.g. Redis's dump.rdb, with Redis stopped or restarted after), or replicate it into a
    /// running Redis (`--replicate-to`). Nothing is touched when verification fails; for
    /// `latest`, a newest snapshot that fails is reported and the next newest tried.
    Restore(RestoreArgs),
    /// Restore a configuration snapshot: verify it, then server-side apply its ConfigMaps
    /// and Secrets to a namespace (credentials from the kubeconfig or the pod's service
    /// account).
    RestoreConfig(RestoreConfigArgs),
    /// Take a snapshot of a Redis server over the replication protocol.
    Snapshot(SnapshotArgs),
    /// Take a snapshot of the ConfigMaps and Secrets of a namespace that labels select.
    SnapshotConfig(SnapshotConfigArgs),
    /// Print a new age identity (or write it to a file created with mode 0600).
    Keygen(KeygenArgs),
    /// Delete the snapshots that retention drops (the newest is always kept).
    Prune(PruneArgs),
    /// Copy to object storage (`--s3`) every snapshot of a folder that is not there yet.
    Push(PushArgs),
}

// The doc comments of the subcommands are on the variants above: clap shows those.

#[derive(Args, Debug)]
struct ListArgs {
    /// The snapshot folder.
    #[arg(long, required_unless_present = "s3", conflicts_with = "s3")]
    dir: Option<PathBuf>,
    /// Or the snapshots in object storage.
    #[command(flatten)]
    s3: S3Args,
}

#[derive(Args, Debug)]
struct VerifyArgs {
    /// The snapshot folder.
    #[arg(long, required_unless_present = "s3", conflicts_with = "s3")]
    dir: Option<PathBuf>,
    /// Or the snapshots in object storage: downloaded into a folder in `--work-dir` and
    /// verified there.
    #[command(flatten)]
    s3: S3Args,
    #[arg(long, default_value = "/tmp")]
    work_dir: PathBuf,
    /// The age identity file (AGE-SECRET-KEY-1...).
    #[arg(long)]
    key_file: PathBuf,
    /// Snapshot ID, or `latest`.
    #[arg(default_value = "latest", conflicts_with = "all")]
    snapshot: String,
    /// Verify every snapshot of the folder.
    #[arg(long)]
    all: bool,
}

/// The snapshot a restore reads: where the snapshots are, the key, and which one.
#[derive(Args, Debug)]
struct SnapshotChoice {
    #[command(flatten)]
    source: SourceArgs,
    /// The age identity file (AGE-SECRET-KEY-1...).
    #[arg(long)]
    key_file: PathBuf,
    /// Snapshot ID, or `latest`.
    #[arg(long, default_value = "latest")]
    snapshot: String,
}

impl SnapshotChoice {
    /// The key, and the snapshot verified with it (see [`choose`]).
    fn verified(&self, kind: SnapshotKind) -> anyhow::Result<(BackupKey, Chosen)> {
        let key = BackupKey::from_file(&self.key_file)?;
        let chosen = choose(&self.source, &key, &self.snapshot, Some(kind))?;
        Ok((key, chosen))
    }
}

#[derive(Args, Debug)]
struct RestoreArgs {
    #[command(flatten)]
    chosen: SnapshotChoice,
    /// The file to write; replaced only once the snapshot verified.
    #[arg(
        long,
        required_unless_present = "replicate_to",
        conflicts_with = "replicate_to"
    )]
    to: Option<PathBuf>,
    /// Load the snapshot into the running Redis at this `host:port` over replication:
    /// it becomes a replica of this process, is sent the snapshot, and is promoted back.
    /// Nothing but Redis touches its data directory.
    #[arg(long, conflicts_with_all = ["then", "shutdown_redis"])]
    replicate_to: Option<String>,
    /// The address Redis connects back to for `--replicate-to` (this pod's IP).
    #[arg(long, env = "POD_IP", default_value = "127.0.0.1")]
    advertise_host: String,
    /// A shell command run once the file is in place, e.g. one that restarts Redis.
    #[arg(long, conflicts_with = "shutdown_redis")]
    then: Option<String>,
    /// Once the file is in place, send `SHUTDOWN NOSAVE` to the Redis at `--check-redis`
    /// (with `--check-password-file`): it exits without saving over the restored file,
    /// and its supervisor (the kubelet, systemd) starts it again on it. Needs no shell.
    #[arg(long, requires = "check_redis")]
    shutdown_redis: bool,
    /// After the restore, wait until the Redis at this address has restarted and check
    /// that it holds the snapshot's keys; fail on a mismatch.
    #[arg(long)]
    check_redis: Option<String>,
    /// File holding the password of that Redis (for the check, `--shutdown-redis` and
    /// `--replicate-to`).
    #[arg(long, alias = "redis-password-file")]
    check_password_file: Option<PathBuf>,
    /// How long to wait for the restarted (or replicating) Redis, in seconds.
    #[arg(long, default_value_t = 60)]
    check_timeout: u64,
}

#[derive(Args, Debug)]
struct RestoreConfigArgs {
    #[command(flatten)]
    chosen: SnapshotChoice,
    /// The namespace to apply the objects to.
    #[arg(long)]
    namespace: String,
}

#[derive(Args, Debug)]
struct SnapshotArgs {
    /// `host:port` of the Redis server.
    #[arg(long)]
    redis: String,
    /// ACL user (default: the default user).
    #[arg(long)]
    username: Option<String>,
    /// File holding the Redis password.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Longest silence of the server, in seconds, before the snapshot fails.
    #[arg(long, default_value_t = 60)]
    io_timeout: u64,
    /// Longest time for the whole snapshot, in seconds: a server that never ends its RDB
    /// fails it then.
    #[arg(long, default_value_t = 3600)]
    deadline: u64,
    #[command(flatten)]
    out: Delivery,
}

#[derive(Args, Debug)]
struct SnapshotConfigArgs {
    /// The namespace whose ConfigMaps and Secrets are archived (credentials from the
    /// kubeconfig or the pod's service account).
    #[arg(long)]
    namespace: String,
    /// Label selector of the ConfigMaps, as `kubectl -l` takes it; none: no ConfigMaps.
    #[arg(long, required_unless_present = "secrets")]
    config_maps: Option<String>,
    /// Label selector of the Secrets; none: no Secrets.
    #[arg(long)]
    secrets: Option<String>,
    #[command(flatten)]
    out: Delivery,
}

/// Where a new snapshot goes, and whose it is.
#[derive(Args, Debug)]
struct Delivery {
    /// The snapshot folder (created if missing).
    #[arg(long)]
    dir: PathBuf,
    /// The age identity file (AGE-SECRET-KEY-1...).
    #[arg(long)]
    key_file: PathBuf,
    /// The Backup the snapshot belongs to, as `namespace/name/uid`; its manifest says so,
    /// and restores of another Backup refuse it.
    #[arg(long, value_parser = parse_owner)]
    owner: Option<Owner>,
    /// Deliver the snapshot to the operator's snapshot endpoint (what a snapshot Job does);
    /// needs `--owner` and `--token-file`.
    #[arg(long, requires_all = ["owner", "token_file"])]
    push_to: Option<String>,
    /// File holding the bearer token for `--push-to`.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Where to write `Reason: message` when the snapshot fails (a container's
    /// termination message).
    #[arg(long)]
    termination_log: Option<PathBuf>,
    /// Also copy the snapshot to object storage.
    #[command(flatten)]
    s3: S3Args,
    /// After the copy, delete what this retention drops in object storage.
    #[arg(long, requires = "s3")]
    keep_last: Option<u32>,
    #[arg(long, requires = "s3")]
    max_age: Option<RetentionAge>,
}

fn parse_owner(text: &str) -> Result<Owner, String> {
    match text.split('/').collect::<Vec<_>>().as_slice() {
        [namespace, name, uid] if [namespace, name, uid].iter().all(|p| !p.is_empty()) => {
            Ok(Owner {
                namespace: (*namespace).into(),
                name: (*name).into(),
                uid: (*uid).into(),
            })
        }
        _ => Err(format!("{text:?} is not namespace/name/uid")),
    }
}

/// A failure and the reason a Backup's status gives for it.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
struct Reasoned {
    reason: &'static str,
    #[source]
    error: anyhow::Error,
}

fn reasoned(reason: &'static str) -> impl FnOnce(anyhow::Error) -> anyhow::Error {
    move |error| Reasoned { reason, error }.into()
}

#[derive(Args, Debug)]
struct PushArgs {
    /// The snapshot folder whose snapshots are copied.
    #[arg(long)]
    dir: PathBuf,
    #[command(flatten)]
    s3: S3Args,
}

#[derive(Args, Debug)]
struct KeygenArgs {
    /// Write the identity to this new file instead of printing it; the public key goes to
    /// stderr.
    #[arg(long)]
    output: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct PruneArgs {
    /// The snapshot folder.
    #[arg(long)]
    dir: PathBuf,
    /// Keep at most this many snapshots, the newest.
    #[arg(long)]
    keep_last: Option<u32>,
    /// Delete snapshots that started longer ago than this; like 7d, 36h, 1d12h.
    #[arg(long)]
    max_age: Option<RetentionAge>,
    /// Show what would be deleted, delete nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Runs a `titan-dr backup` command: exits 0 when it did what was asked, 2 when what was asked
/// cannot be (see [`exit_for`]), 1 when it failed; with the error on stderr.
pub async fn run(command: BackupCommand) -> Exit {
    // Blocking file and socket I/O: keep it off the async workers.
    let result = tokio::task::spawn_blocking(move || run_blocking(command)).await;
    match result.map_err(anyhow::Error::from).and_then(|done| done) {
        Ok(()) => Exit::Succeeded,
        Err(error) => {
            eprintln!("error: {error:#}");
            exit_for(&error)
        }
    }
}

/// Invalid input (2), as for the other commands: a key that is missing or not a key, a
/// snapshot ID that is not one, a source that names no folder or Backup. Anything else — a
/// snapshot that does not verify, a Redis that does not answer — is a failure (1).
pub fn exit_for(error: &anyhow::Error) -> Exit {
    use crate::backup::{KeyError, VerifyError, restore::SourceError};
    let invalid = error.chain().any(|cause| {
        cause.is::<KeyError>()
            || cause.is::<SourceError>()
            || matches!(cause.downcast_ref(), Some(VerifyError::InvalidId { .. }))
    });
    if invalid {
        Exit::InvalidInput
    } else {
        Exit::Failed
    }
}

fn run_blocking(command: BackupCommand) -> anyhow::Result<()> {
    match command.command {
        BackupSubcommand::List(args) => list(&args),
        BackupSubcommand::Verify(args) => verify(&args),
        BackupSubcommand::Restore(args) => restore(args),
        BackupSubcommand::RestoreConfig(args) => restore_config(&args),
        BackupSubcommand::Snapshot(args) => snapshot(args),
        BackupSubcommand::SnapshotConfig(args) => snapshot_config(args),
        BackupSubcommand::Keygen(args) => keygen(args.output.as_deref()),
        BackupSubcommand::Prune(args) => prune(args),
        BackupSubcommand::Push(args) => push(&args),
    }
}

/// `restore`: verifies the snapshot, then loads it over replication or places the file.
fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let password = args
        .check_password_file
        .as_deref()
        .map(read_password)
        .transpose()?;
    let (key, chosen) = args.chosen.verified(SnapshotKind::Redis)?;
    match &args.replicate_to {
        Some(address) => restore_by_replication(&args, &key, &chosen, address, password),
        None => restore_to_file(&args, &key, &chosen, password),
    }
}

/// `restore --replicate-to`: the snapshot, verified into a work file, sent to the running
/// Redis as its primary's; then its keys are checked.
fn restore_by_replication(
    args: &RestoreArgs,
    key: &BackupKey,
    chosen: &Chosen,
    address: &str,
    password: Option<String>,
) -> anyhow::Result<()> {
    let id = &chosen.manifest.id;
    let timeout = Duration::from_secs(args.check_timeout);
    let rdb = args
        .chosen
        .source
        .work_dir
        .join(format!("titan-dr-restore-{id}.rdb"));
    let _removed = RemoveOnDrop(rdb.clone());
    chosen
        .store
        .restore(id, key, &rdb)
        .context("refusing to restore; Redis is untouched")?;
    let expected = ExpectedKeys::of_rdb(&rdb)?;
    println!(
        "verified snapshot {id} ({}, {})",
        human_bytes(chosen.manifest.plaintext.size_bytes),
        describe_keys(&chosen.manifest)
    );
    let replication = Replication {
        address,
        password: password.as_deref(),
        advertise_host: &args.advertise_host,
        timeout,
    };
    replicate(&rdb, &replication)?;
    check_keys(address, password.as_deref(), &expected, timeout)
}

/// `restore --to FILE`: the file replaced by the verified snapshot; then, as asked, a
/// command run, Redis shut down to restart on it, and its keys checked once it has.
fn restore_to_file(
    args: &RestoreArgs,
    key: &BackupKey,
    chosen: &Chosen,
    password: Option<String>,
) -> anyhow::Result<()> {
    let id = &chosen.manifest.id;
    let timeout = Duration::from_secs(args.check_timeout);
    let to = args.to.as_deref().context("give --to or --replicate-to")?;
    let manifest = chosen
        .store
        .restore(id, key, to)
        .with_context(|| format!("refusing to restore; {} is untouched", to.display()))?;
    let expected = ExpectedKeys::of_rdb(to)?;
    let placed = Instant::now();
    println!(
        "restored snapshot {id} to {} ({}, {})",
        to.display(),
        human_bytes(manifest.plaintext.size_bytes),
        describe_keys(&manifest)
    );
    if let Some(command) = &args.then {
        let status = std::process::Command::new("/bin/sh")
            .args(["-c", command])
            .status()?;
        if !status.success() {
            bail!("the command after the restore failed ({status}): {command}");
        }
    }
    if let (true, Some(address)) = (args.shutdown_redis, &args.check_redis) {
        shutdown_nosave(address, password.as_deref(), Duration::from_secs(10))?;
        println!("sent SHUTDOWN NOSAVE to Redis at {address}");
    }
    if let Some(address) = &args.check_redis {
        wait_restarted(address, password.as_deref(), placed, timeout)?;
        check_keys(address, password.as_deref(), &expected, timeout)?;
    }
    Ok(())
}

/// `restore-config`: the verified archive's objects applied to the namespace.
fn restore_config(args: &RestoreConfigArgs) -> anyhow::Result<()> {
    let (key, chosen) = args.chosen.verified(SnapshotKind::Configuration)?;
    let id = chosen.manifest.id.clone();
    let archive = args
        .chosen
        .source
        .work_dir
        .join(format!("titan-dr-restore-{}-{id}.tar", std::process::id()));
    let _removed = RemoveOnDrop(archive.clone());
    chosen
        .store
        .restore(&id, &key, &archive)
        .context("refusing to restore; nothing was applied")?;
    let entries = fs::File::open(&archive).and_then(config_archive::read)?;
    let handle = tokio::runtime::Handle::current();
    // The pod's ServiceAccount in a restore Job, the kubeconfig's user elsewhere.
    let client = handle.block_on(kube::Client::try_default())?;
    let applied = handle.block_on(config_archive::apply(&client, entries, &args.namespace))?;
    println!(
        "restored snapshot {id}: applied {} objects to namespace {}",
        applied.len(),
        args.namespace
    );
    for path in applied {
        println!("  {path}");
    }
    Ok(())
}

/// `snapshot`: one Redis snapshot into the folder.
/// Runs `take`, writing its failure to `--termination-log` as `Reason: message`.
fn reported(out: &Delivery, take: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    let result = take();
    if let (Err(error), Some(path)) = (&result, &out.termination_log) {
        let reason = error
            .chain()
            .find_map(|cause| match cause.downcast_ref::<Reasoned>() {
                Some(reasoned) => Some(reasoned.reason),
                None => cause.downcast_ref::<StoreError>().map(StoreError::reason),
            })
            .unwrap_or("SnapshotFailed");
        let message: Vec<String> = error
            .chain()
            .filter(|cause| !cause.is::<Reasoned>())
            .map(ToString::to_string)
            .collect();
        // Best effort: the error goes to stderr whatever happens here.
        let _ = fs::write(path, format!("{reason}: {}", message.join(": ")));
    }
    result
}

impl Delivery {
    /// The key, the store, and the object storage copy: settings that cannot work fail
    /// before the source is asked.
    fn open(&self) -> anyhow::Result<(BackupKey, Store, Option<Offsite>)> {
        let key =
            BackupKey::from_file(&self.key_file).map_err(|e| reasoned("KeyInvalid")(e.into()))?;
        let store = match &self.owner {
            Some(owner) => Store::owned(&self.dir, owner.clone())?,
            None => Store::open(&self.dir)?,
        };
        let offsite = self.s3.location()?.map(Offsite::new).transpose()?;
        Ok((key, store, offsite))
    }

    /// The new snapshot delivered to the operator and copied to object storage, as asked.
    fn deliver(
        &self,
        store: &Store,
        manifest: &Manifest,
        offsite: Option<&Offsite>,
    ) -> anyhow::Result<()> {
        let handle = tokio::runtime::Handle::current();
        if let (Some(url), Some(owner), Some(token_file)) =
            (&self.push_to, &self.owner, &self.token_file)
        {
            let remote = Remote {
                url: url.clone(),
                namespace: owner.namespace.clone(),
                backup: owner.name.clone(),
                token_file: token_file.clone(),
            };
            handle
                .block_on(remote.push(store, manifest, PUSH_PATIENCE))
                .map_err(reasoned("DeliveryFailed"))?;
            println!("delivered snapshot {} to {url}", manifest.id);
        }
        if let Some(offsite) = offsite {
            let copied = handle.block_on(copy_offsite(offsite, store, manifest, self));
            let failed = |e: anyhow::Error| {
                e.context(format!("snapshot {} is not in object storage", manifest.id))
            };
            copied.map_err(failed).map_err(reasoned("OffsiteFailed"))?;
            println!("copied snapshot {} to {}", manifest.id, offsite.location());
        }
        Ok(())
    }
}

fn snapshot(args: SnapshotArgs) -> anyhow::Result<()> {
    reported(&args.out, || {
        let (key, store, offsite) = args.out.open()?;
        let password = args
            .password_file
            .as_deref()
            .map(read_password)
            .transpose()?;
        let target = RedisTarget {
            address: args.redis.clone(),
            username: args.username.clone(),
            password,
        };
        let options = SnapshotOptions {
            io_timeout: Duration::from_secs(args.io_timeout),
            deadline: Duration::from_secs(args.deadline),
            ..SnapshotOptions::default()
        };
        let manifest = store.snapshot_redis(&target, &key, &options)?;
        println!(
            "snapshot {} of {}: {} ({} encrypted), {}, sha256 {}",
            manifest.id,
            target.address,
            human_bytes(manifest.plaintext.size_bytes),
            human_bytes(manifest.size_bytes),
            describe_keys(&manifest),
            manifest.sha256
        );
        args.out.deliver(&store, &manifest, offsite.as_ref())
    })
}

/// `snapshot-config`: the selected ConfigMaps and Secrets of a namespace, archived.
fn snapshot_config(args: SnapshotConfigArgs) -> anyhow::Result<()> {
    reported(&args.out, || {
        let (key, store, offsite) = args.out.open()?;
        let handle = tokio::runtime::Handle::current();
        let entries = handle
            .block_on(selected_objects(&args))
            .map_err(reasoned("SourceUnavailable"))?;
        // A snapshot of nothing would become the newest, and restoring `latest` would then
        // restore nothing: an empty selection is a failure, not a snapshot.
        if entries.is_empty() {
            let nothing = anyhow::anyhow!(
                "no ConfigMap or Secret in namespace {} matches the selectors; no snapshot taken",
                args.namespace
            );
            return Err(reasoned("NothingSelected")(nothing));
        }
        let manifest = config_archive::snapshot(&store, &key, &entries, &args.namespace)?;
        println!(
            "snapshot {} of namespace {}: {} objects",
            manifest.id,
            args.namespace,
            entries.len()
        );
        args.out.deliver(&store, &manifest, offsite.as_ref())
    })
}

async fn selected_objects(
    args: &SnapshotConfigArgs,
) -> anyhow::Result<Vec<config_archive::ArchivedObject>> {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use kube::api::{Api, ListParams};
    let client = kube::Client::try_default().await?;
    let ns = &args.namespace;
    let mut maps = Vec::new();
    if let Some(selector) = &args.config_maps {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        let listed = api.list(&ListParams::default().labels(selector)).await;
        maps = listed
            .with_context(|| format!("listing ConfigMaps of {ns}"))?
            .items;
    }
    let mut secrets = Vec::new();
    if let Some(selector) = &args.secrets {
        let api: Api<Secret> = Api::namespaced(client, ns);
        let listed = api.list(&ListParams::default().labels(selector)).await;
        secrets = listed
            .with_context(|| format!("listing Secrets of {ns}"))?
            .items;
    }
    Ok(config_archive::entries(&maps, &secrets)?)
}

/// How long a snapshot Job waits for an operator that is away (restarting, rescheduled).
const PUSH_PATIENCE: Duration = Duration::from_secs(300);

async fn copy_offsite(
    offsite: &Offsite,
    store: &Store,
    manifest: &Manifest,
    args: &Delivery,
) -> anyhow::Result<()> {
    offsite.upload(store, manifest).await?;
    if args.keep_last.is_some() || args.max_age.is_some() {
        let policy = RetentionPolicy {
            keep_last: args.keep_last,
            max_age: args.max_age.as_ref().map(RetentionAge::duration),
        };
        offsite.prune(&policy, Timestamp::now()).await?;
    }
    Ok(())
}

/// `push`: the folder's snapshots that object storage lacks, copied there.
fn push(args: &PushArgs) -> anyhow::Result<()> {
    let store = existing_store(&args.dir)?;
    let Some(location) = args.s3.location()? else {
        bail!("give --s3 s3://bucket/prefix");
    };
    let offsite = Offsite::new(location)?;
    let handle = tokio::runtime::Handle::current();
    let there: std::collections::BTreeSet<String> =
        handle.block_on(offsite.ids())?.into_iter().collect();
    let mut copied = 0;
    for manifest in store.list()?.snapshots.iter().rev() {
        if !there.contains(&manifest.id) {
            handle.block_on(offsite.upload(&store, manifest))?;
            println!("copied {}", manifest.id);
            copied += 1;
        }
    }
    println!("copied {copied} snapshot(s) to {}", offsite.location());
    Ok(())
}

/// `prune`: what retention drops, deleted (or only listed, with `--dry-run`).
fn prune(args: PruneArgs) -> anyhow::Result<()> {
    let store = existing_store(&args.dir)?;
    let policy = RetentionPolicy {
        keep_last: args.keep_last,
        max_age: args.max_age.as_ref().map(RetentionAge::duration),
    };
    let ids = if args.dry_run {
        store.select_pruned(&policy, Timestamp::now())?
    } else {
        store.prune(&policy, Timestamp::now())?
    };
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    for id in &ids {
        println!("{verb} {id}");
    }
    println!("{verb} {} snapshot(s)", ids.len());
    Ok(())
}

/// `list`: a table of the snapshots, then the incomplete ones.
fn list(args: &ListArgs) -> anyhow::Result<()> {
    let (listing, place) = match (&args.dir, args.s3.location()?) {
        (_, Some(location)) => {
            let offsite = Offsite::new(location)?;
            let handle = tokio::runtime::Handle::current();
            let listing = crate::backup::Listing {
                snapshots: handle.block_on(offsite.manifests())?,
                problems: Vec::new(),
            };
            (listing, offsite.location().to_string())
        }
        (Some(dir), None) => (existing_store(dir)?.list()?, dir.display().to_string()),
        (None, None) => bail!("give --dir or --s3"),
    };
    if listing.snapshots.is_empty() && listing.problems.is_empty() {
        println!("no snapshots in {place}");
        return Ok(());
    }
    println!(
        "{:<18} {:<14} {:<22} {:>11}  KEYS",
        "ID", "KIND", "COMPLETED", "SIZE"
    );
    for m in &listing.snapshots {
        println!(
            "{:<18} {:<14} {:<22} {:>11}  {}",
            m.id,
            format!("{:?}", m.kind).to_lowercase(),
            m.completed_at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            human_bytes(m.size_bytes),
            m.keys.map_or_else(|| "-".to_owned(), |k| k.to_string())
        );
    }
    for problem in &listing.problems {
        println!("INCOMPLETE {problem}");
    }
    Ok(())
}

/// `verify`: one snapshot, or all of them; fails when any fails.
fn verify(args: &VerifyArgs) -> anyhow::Result<()> {
    let key = BackupKey::from_file(&args.key_file)?;
    let (store, dir, downloaded) = match (&args.dir, args.s3.location()?) {
        (_, Some(location)) => {
            let work = args
                .work_dir
                .join(format!("titan-dr-verify-{}", std::process::id()));
            let store = Store::open(&work)?;
            download_for_verify(Offsite::new(location)?, &store, args)?;
            (store, work, true)
        }
        (Some(dir), None) => (existing_store(dir)?, dir.clone(), false),
        (None, None) => bail!("give --dir or --s3"),
    };
    let result = verify_store(args, &store, &key, &dir);
    if downloaded {
        let _ = fs::remove_dir_all(&dir);
    }
    result
}

/// `verify` of the snapshots of `store` (a folder, or what was downloaded into `dir`).
fn verify_store(
    args: &VerifyArgs,
    store: &Store,
    key: &BackupKey,
    dir: &Path,
) -> anyhow::Result<()> {
    let (ids, incomplete) = if args.all {
        let listing = store.list()?;
        for problem in &listing.problems {
            println!("FAILED {problem}");
        }
        let ids: Vec<String> = listing.snapshots.into_iter().map(|m| m.id).collect();
        if ids.is_empty() && listing.problems.is_empty() {
            bail!("no snapshots in {}", dir.display());
        }
        (ids, listing.problems.len())
    } else {
        (vec![store.resolve(&args.snapshot)?], 0)
    };
    let failed = verify_each(store, key, &ids) + incomplete;
    if failed > 0 {
        let total = ids.len() + incomplete;
        bail!("{failed} of {total} snapshot(s) failed verification");
    }
    Ok(())
}

/// The snapshots `verify` is asked for, downloaded from object storage into `store`.
fn download_for_verify(offsite: Offsite, store: &Store, args: &VerifyArgs) -> anyhow::Result<()> {
    let handle = tokio::runtime::Handle::current();
    let ids = handle.block_on(offsite.ids())?;
    let wanted: Vec<&String> = match args.snapshot.as_str() {
        _ if args.all => ids.iter().collect(),
        "latest" => ids.iter().take(1).collect(),
        id => ids.iter().filter(|i| *i == id).collect(),
    };
    for id in wanted {
        handle.block_on(offsite.download(id, store))?;
    }
    Ok(())
}

/// Verifies each snapshot, printing one line for each; returns how many failed.
fn verify_each(store: &Store, key: &BackupKey, ids: &[String]) -> usize {
    let mut failed = 0;
    for id in ids {
        match store.verify(id, key) {
            Ok(m) => println!(
                "OK {id}: {} ({} encrypted), {}, sha256 {}",
                human_bytes(m.plaintext.size_bytes),
                human_bytes(m.size_bytes),
                describe_keys(&m),
                m.sha256
            ),
            Err(err) => {
                failed += 1;
                println!("FAILED {err}");
            }
        }
    }
    failed
}

/// A store that must already exist: reading commands never create folders.
fn existing_store(dir: &Path) -> anyhow::Result<Store> {
    if !dir.is_dir() {
        let why = format!("{} is not a folder", dir.display());
        return Err(crate::backup::restore::SourceError(why).into());
    }
    Ok(Store::open(dir)?)
}

/// `keygen`: a new identity, printed or written to a new file only its owner reads.
fn keygen(output: Option<&Path>) -> anyhow::Result<()> {
    let key = BackupKey::generate();
    let Some(path) = output else {
        print!("{}", key.to_key_file());
        return Ok(());
    };
    let mut file = fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(key.to_key_file().as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("Public key: {}", key.recipient());
    Ok(())
}

fn read_password(path: &Path) -> anyhow::Result<String> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("reading the password file {}", path.display()))?;
    // Files written with `echo` end in a newline that is not part of the password.
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(text.strip_suffix('\r').unwrap_or(text).to_owned())
}

fn describe_keys(manifest: &Manifest) -> String {
    match (&manifest.redis, manifest.keys) {
        (Some(redis), Some(keys)) => {
            format!("{keys} keys ({})", format_databases(&redis.databases))
        }
        (None, Some(objects)) => format!("{objects} objects"),
        _ => "no key count".into(),
    }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Removes a temporary file when the restore ends, however it ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        backup: BackupCommand,
    }

    #[test]
    fn shutdown_needs_the_address_and_excludes_a_restart_command() {
        use clap::Parser;
        let restore = ["titan-dr", "restore", "--dir=d", "--key-file=k", "--to=f"];
        let parse = |more: &[&str]| Cli::try_parse_from(restore.iter().chain(more));
        assert!(parse(&["--shutdown-redis", "--check-redis=redis:6379"]).is_ok());
        let alone = parse(&["--shutdown-redis"]).unwrap_err();
        assert!(alone.to_string().contains("--check-redis"), "{alone}");
        let both = parse(&["--shutdown-redis", "--check-redis=r:1", "--then=true"]).unwrap_err();
        assert_eq!(
            both.kind(),
            clap::error::ErrorKind::ArgumentConflict,
            "{both}"
        );
    }
}

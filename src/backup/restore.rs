//! What a restore does before and after the bytes move: find the snapshot to restore and
//! verify it (from a folder, or from the operator over HTTP), and load a Redis snapshot
//! into a running Redis over replication, or have the Redis restart on a restored file
//! (`SHUTDOWN NOSAVE`, then wait for its restart); then check what Redis holds.

use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use k8s_openapi::jiff::Timestamp;

use super::key::BackupKey;
use super::manifest::{Manifest, SnapshotKind, snapshot_id};
use super::offsite::{Offsite, S3Args};
use super::remote::Remote;
use super::store::Store;
use crate::redis::primary::Primary;

/// Where the snapshots are: a folder, or a Backup at the operator's snapshot endpoint.
#[derive(Args, Debug, Clone)]
pub struct SourceArgs {
    /// The snapshot folder.
    #[arg(long, required_unless_present_any = ["from", "s3"], conflicts_with_all = ["from", "s3"])]
    pub dir: Option<PathBuf>,
    /// The operator's snapshot endpoint (e.g. `http://titan-dr.titan-dr-system.svc:8081`):
    /// the snapshots are downloaded into `--work-dir` and verified there.
    #[arg(long, requires_all = ["backup", "token_file"])]
    pub from: Option<String>,
    /// The Backup at the endpoint, as `namespace/name`; with `--dir`, the Backup whose
    /// snapshots alone may be restored.
    #[arg(long)]
    pub backup: Option<String>,
    /// A ServiceAccount token for the audience `titan-dr` (a projected token's file).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Where downloaded snapshots are kept while they are verified and restored.
    #[arg(long, default_value = "/tmp")]
    pub work_dir: PathBuf,
    /// With `latest`: only snapshots started at or before this time (RFC 3339). A recovery
    /// passes its own start, so that a snapshot its own steps made possible (of a Redis just
    /// started empty, say) is never what it restores.
    #[arg(long)]
    pub not_after: Option<Timestamp>,
    /// Restore a snapshot that another Backup than `--backup` took (a deliberate
    /// cross-Backup restore); without it such a snapshot is refused.
    #[arg(long)]
    pub any_owner: bool,
    /// Or the snapshots in object storage: downloaded into `--work-dir` and verified there.
    #[command(flatten)]
    pub s3: S3Args,
}

/// A snapshot that verified, in a store on this machine.
pub struct Chosen {
    pub store: Store,
    pub manifest: Manifest,
    /// The newer snapshots that were refused, with why.
    pub refused: Vec<String>,
}

/// The snapshot `which` names, verified: an ID is that snapshot or an error; `latest` is the
/// newest snapshot that verifies, each newer one that does not being reported and skipped
/// (a damaged newest snapshot must not leave the system unrestored while a good one exists).
///
/// # Errors
///
/// No snapshot verifies, the named one does not, or the snapshots cannot be read.
pub fn choose(
    source: &SourceArgs,
    key: &BackupKey,
    which: &str,
    kind: Option<SnapshotKind>,
) -> anyhow::Result<Chosen> {
    let handle = tokio::runtime::Handle::current();
    let offsite = source.s3.location()?.map(Offsite::new).transpose()?;
    let remote = if offsite.is_some() {
        None
    } else {
        remote_of(source)?
    };
    let downloaded = remote.is_some() || offsite.is_some();
    let (store, index) = match (&remote, &offsite) {
        (None, None) => (Store::open(source.dir.clone().unwrap_or_default())?, None),
        (Some(remote), _) => (work_store(source)?, Some(handle.block_on(remote.index())?)),
        (None, Some(_)) => (work_store(source)?, None),
    };
    let present: Vec<String> = match (&index, &offsite) {
        (Some(index), _) => index.snapshots.iter().map(|s| s.id.clone()).collect(),
        (None, Some(offsite)) => handle.block_on(offsite.ids())?,
        (None, None) => store.ids()?,
    };
    let candidates = match which {
        "latest" => before_cutoff(present, source.not_after),
        // A remote store is empty until downloaded: the ID is checked against the index.
        id if downloaded && present.iter().any(|c| c == id) => vec![id.to_owned()],
        id => vec![store.resolve(id)?],
    };
    if candidates.is_empty() {
        bail!("the Backup has no snapshots; nothing was restored");
    }
    let mut refused = Vec::new();
    for id in &candidates {
        let entry = index
            .as_ref()
            .and_then(|index| index.snapshots.iter().find(|s| &s.id == id));
        if let (Some(remote), Some(entry)) = (&remote, entry) {
            handle.block_on(remote.download(entry, store.dir()))?;
        }
        if let Some(offsite) = &offsite {
            handle.block_on(offsite.download(id, &store))?;
        }
        let verified = store.verify(id, key).map_err(|err| err.to_string());
        let err = match verified.and_then(|manifest| accepted(source, kind, manifest)) {
            Ok(manifest) => {
                return Ok(Chosen {
                    store,
                    manifest,
                    refused,
                });
            }
            Err(err) if which != "latest" => {
                bail!("refusing to restore snapshot {id}: {err}; the target is untouched");
            }
            Err(err) => err,
        };
        eprintln!("refusing snapshot {id}: {err}");
        refused.push(err);
        if downloaded {
            for file in store.files_of(id) {
                let _ = std::fs::remove_file(store.dir().join(file));
            }
        }
    }
    bail!(
        "no snapshot verified ({} refused); nothing was restored, the target is untouched: {}",
        refused.len(),
        refused.join("; ")
    )
}

/// A folder of this process in `--work-dir`, for downloaded snapshots.
fn work_store(source: &SourceArgs) -> anyhow::Result<Store> {
    let dir = source
        .work_dir
        .join(format!("titan-dr-{}", std::process::id()));
    Ok(Store::open(dir)?)
}

/// `manifest` if it is of `kind` and, unless `--any-owner`, of the Backup `--backup` names.
/// (What a manifest says is authentic once it verified: the MAC covers it.)
fn accepted(
    source: &SourceArgs,
    kind: Option<SnapshotKind>,
    manifest: Manifest,
) -> Result<Manifest, String> {
    let id = &manifest.id;
    if let Some(kind) = kind
        && manifest.kind != kind
    {
        return Err(format!(
            "snapshot {id} is a {} snapshot, not a {} one",
            kind_name(manifest.kind),
            kind_name(kind)
        ));
    }
    let expected = source.backup.as_deref().filter(|_| !source.any_owner);
    let Some(expected) = expected else {
        return Ok(manifest);
    };
    let owner = manifest.owner.as_ref();
    if owner
        .map(|o| format!("{}/{}", o.namespace, o.name))
        .as_deref()
        == Some(expected)
    {
        return Ok(manifest);
    }
    let owner = owner.map_or_else(|| "no Backup".to_owned(), ToString::to_string);
    Err(format!(
        "snapshot {id} belongs to {owner}, not to Backup {expected} (--any-owner restores it deliberately)"
    ))
}

fn kind_name(kind: SnapshotKind) -> &'static str {
    match kind {
        SnapshotKind::Redis => "Redis",
        SnapshotKind::Configuration => "configuration",
    }
}

/// A source of snapshots that names none: no folder, no `namespace/name`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// The Backup at the operator's endpoint that `source` names, or `None` for a folder.
fn remote_of(source: &SourceArgs) -> anyhow::Result<Option<Remote>> {
    let invalid = |why: String| anyhow::Error::new(SourceError(why));
    match (&source.dir, &source.from) {
        (Some(dir), _) if !dir.is_dir() => {
            Err(invalid(format!("{} is not a folder", dir.display())))
        }
        (Some(_), _) => Ok(None),
        (None, Some(url)) => {
            let backup = source.backup.as_deref().unwrap_or_default();
            let (namespace, name) = backup
                .split_once('/')
                .ok_or_else(|| invalid(format!("--backup {backup:?} is not namespace/name")))?;
            Ok(Some(Remote {
                url: url.clone(),
                namespace: namespace.into(),
                backup: name.into(),
                token_file: source.token_file.clone().unwrap_or_default(),
            }))
        }
        (None, None) => Err(invalid("give --dir or --from".into())),
    }
}

/// The snapshot IDs (newest first) started at or before `not_after`; those left out are
/// said.
fn before_cutoff(ids: Vec<String>, not_after: Option<Timestamp>) -> Vec<String> {
    let cutoff = not_after.map(snapshot_id);
    let (kept, later): (Vec<String>, Vec<String>) = ids
        .into_iter()
        .partition(|id| cutoff.as_ref().is_none_or(|cutoff| id <= cutoff));
    if let (false, Some(at)) = (later.is_empty(), not_after) {
        println!(
            "leaving out {} snapshot(s) newer than {at}: {}",
            later.len(),
            later.join(", ")
        );
    }
    kept
}

/// A Redis connection from `host:port` and a password, without building a URL (a password
/// may hold `/`, `%`, `#` or `@`).
pub fn redis_client(address: &str, password: Option<&str>) -> anyhow::Result<redis::Client> {
    let (host, port) = address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
        .with_context(|| format!("{address:?} is not host:port"))?;
    let mut settings = redis::RedisConnectionInfo::default();
    if let Some(password) = password {
        settings = settings.set_password(password);
    }
    let info =
        redis::IntoConnectionInfo::into_connection_info(redis::ConnectionAddr::Tcp(host, port))?
            .set_redis_settings(settings);
    Ok(redis::Client::open(info)?)
}

/// How a Redis restore over replication reaches this process.
pub struct Replication<'a> {
    /// `host:port` of the Redis restored to.
    pub address: &'a str,
    pub password: Option<&'a str>,
    /// The address that Redis connects back to (the restore pod's IP).
    pub advertise_host: &'a str,
    /// How long the whole load may take.
    pub timeout: Duration,
}

/// Loads the RDB at `rdb` into the running Redis at `to.address`: this process listens as a
/// primary, Redis is made its replica (which replaces its whole dataset with the RDB), then
/// promoted back and made to save, so its own volume holds the restored data. Redis's
/// `masterauth` is set to a one-time secret for the sync and put back afterwards.
///
/// # Errors
///
/// Redis refused a command, never synced within the timeout, or could not be promoted.
pub fn replicate(rdb: &Path, to: &Replication<'_>) -> anyhow::Result<()> {
    let mut redis = connect_when_up(to)?;
    let primary = Primary::bind("0.0.0.0:0").context("listening for the replica")?;
    let port = primary.port()?;
    let previous: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("masterauth")
        .query(&mut redis)
        .with_context(|| format!("Redis at {} refused CONFIG GET", to.address))?;
    let previous = previous.get(1).cloned().unwrap_or_default();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("masterauth")
        .arg(primary.secret())
        .exec(&mut redis)
        .with_context(|| format!("Redis at {} refused CONFIG SET masterauth", to.address))?;
    let serving = primary.serve(rdb.to_owned());
    let synced = sync_from(&mut redis, to, port);
    // Promoted whatever happened: a Redis left a replica of a gone primary would refuse writes.
    let promoted = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .exec(&mut redis)
        .with_context(|| format!("Redis at {} refused REPLICAOF NO ONE", to.address));
    let _ = redis::cmd("CONFIG")
        .arg("SET")
        .arg("masterauth")
        .arg(&previous)
        .exec(&mut redis);
    let served = serving.stop();
    if let Err(err) = synced {
        let refused = served.refused.join("; ");
        return Err(err.context(format!("replicas refused: [{refused}]")));
    }
    promoted?;
    // Saved now, so a restart of Redis comes back with the restored data.
    redis::cmd("SAVE")
        .exec(&mut redis)
        .with_context(|| format!("Redis at {} refused SAVE", to.address))?;
    println!(
        "Redis at {} loaded the snapshot, was promoted and saved it",
        to.address
    );
    Ok(())
}

/// A connection to the Redis restored to, retried while it does not answer yet: it may have
/// just started, and its Service answers a moment after the pod is ready.
fn connect_when_up(to: &Replication<'_>) -> anyhow::Result<redis::Connection> {
    let client = redis_client(to.address, to.password)?;
    let started = Instant::now();
    loop {
        match client.get_connection_with_timeout(Duration::from_secs(5)) {
            Ok(redis) => return Ok(redis),
            Err(err) if started.elapsed() < to.timeout && err.is_io_error() => {
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(err) => {
                return Err(err).with_context(|| format!("connecting to Redis at {}", to.address));
            }
        }
    }
}

/// Makes Redis a replica of this process (listening on `port`) and waits until it has
/// loaded what it was sent.
fn sync_from(redis: &mut redis::Connection, to: &Replication<'_>, port: u16) -> anyhow::Result<()> {
    redis::cmd("REPLICAOF")
        .arg(to.advertise_host)
        .arg(port)
        .exec(redis)
        .with_context(|| format!("Redis at {} refused REPLICAOF", to.address))?;
    println!(
        "Redis at {} is replicating the snapshot from {}:{port}",
        to.address, to.advertise_host
    );
    let started = Instant::now();
    loop {
        let info: String = redis::cmd("INFO").query(redis)?;
        let field = |name| info_field(&info, name).unwrap_or_default();
        if field("master_link_status") == "up"
            && field("master_sync_in_progress") == "0"
            && field("loading") == "0"
        {
            return Ok(());
        }
        if started.elapsed() > to.timeout {
            bail!(
                "Redis at {} did not load the snapshot within {:?} (link {}, sync in progress {})",
                to.address,
                to.timeout,
                field("master_link_status"),
                field("master_sync_in_progress")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What a restored Redis must hold: every key without a TTL, and of the keys with one, at
/// least those that have not expired since (Redis drops expired keys lazily, so some may
/// still be counted) and at most all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedKeys {
    pub persistent: u64,
    /// Expiry times (Unix ms) of the keys with a TTL.
    pub expiries: Vec<u64>,
}

impl ExpectedKeys {
    /// From a decrypted RDB.
    ///
    /// # Errors
    ///
    /// The file is not a well-formed RDB.
    pub fn of_rdb(rdb: &Path) -> anyhow::Result<Self> {
        let file = std::io::BufReader::new(std::fs::File::open(rdb)?);
        let (info, expiries) = crate::redis::rdb::scan_expiries(file)?;
        Ok(Self {
            persistent: info.total_keys() - expiries.len() as u64,
            expiries,
        })
    }

    /// Checks Redis's `keys` and `expires` (summed over databases) at `now_ms`.
    ///
    /// # Errors
    ///
    /// A sentence naming the difference.
    pub fn check(&self, keys: u64, expires: u64, now_ms: u64) -> Result<String, String> {
        let persistent = keys.saturating_sub(expires);
        let live = self.expiries.iter().filter(|&&at| at > now_ms).count() as u64;
        let most = self.expiries.len() as u64;
        if persistent != self.persistent {
            return Err(format!(
                "Redis holds {persistent} keys without a TTL, the snapshot {}",
                self.persistent
            ));
        }
        if expires < live || expires > most {
            return Err(format!(
                "Redis holds {expires} keys with a TTL, the snapshot {most} of which {live} have not expired"
            ));
        }
        Ok(format!(
            "{keys} keys, as the snapshot ({} without a TTL, {expires} of {most} with one; {} expired since)",
            self.persistent,
            most - live
        ))
    }
}

/// Waits for Redis at `address` to answer, then checks its keys against `expected`.
///
/// # Errors
///
/// Redis never answered, or holds other keys than the snapshot.
pub fn check_keys(
    address: &str,
    password: Option<&str>,
    expected: &ExpectedKeys,
    timeout: Duration,
) -> anyhow::Result<()> {
    let client = redis_client(address, password)?;
    let started = Instant::now();
    let mut last = String::from("it never answered");
    while started.elapsed() < timeout {
        let info = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .and_then(|mut con| redis::cmd("INFO").arg("keyspace").query::<String>(&mut con));
        match info {
            Ok(info) => {
                let (keys, expires) = keyspace(&info);
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis() as u64;
                return match expected.check(keys, expires, now) {
                    Ok(summary) => {
                        println!("Redis at {address} holds {summary}");
                        Ok(())
                    }
                    Err(difference) => bail!("Redis at {address} differs: {difference}"),
                };
            }
            Err(error) => last = format!("it does not answer: {error}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("Redis at {address} was not back within {timeout:?}: {last}")
}

pub(crate) fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// `keys=` and `expires=` summed over the `db<N>:` lines of INFO keyspace.
pub(crate) fn keyspace(info: &str) -> (u64, u64) {
    let field = |line: &str, name: &str| -> u64 {
        line.split([':', ','])
            .find_map(|part| part.strip_prefix(name)?.parse().ok())
            .unwrap_or(0)
    };
    info.lines()
        .filter(|l| l.starts_with("db"))
        .fold((0, 0), |(keys, expires), line| {
            (
                keys + field(line, "keys="),
                expires + field(line, "expires="),
            )
        })
}

/// Stops the Redis at `address` with `SHUTDOWN NOSAVE`, so that it exits without writing its
/// dataset over the file just restored. Done when the server closes the connection; an error
/// reply (a refused password, `Errors trying to SHUTDOWN`) is the error. Plain RESP over a
/// socket: a client library would send commands of its own first.
pub fn shutdown_nosave(
    address: &str,
    password: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let unreachable = || format!("Redis at {address} is unreachable");
    let mut last = io::Error::new(ErrorKind::NotFound, "the name resolves to no address");
    let mut connected = None;
    for addr in address.to_socket_addrs().with_context(unreachable)? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                connected = Some(stream);
                break;
            }
            Err(err) => last = err,
        }
    }
    let stream = connected.ok_or(last).with_context(unreachable)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut reader = BufReader::new(stream);
    // One reply line; `None` when the server closed the connection.
    let mut reply = |command: &redis::Cmd| -> anyhow::Result<Option<String>> {
        reader
            .get_mut()
            .write_all(&command.get_packed_command())
            .with_context(|| format!("writing to Redis at {address}"))?;
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => Ok(None),
            Ok(_) => Ok(Some(line.trim_end().to_owned())),
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof
                ) =>
            {
                Ok(None)
            }
            Err(err) => Err(err).with_context(|| format!("reading from Redis at {address}")),
        }
    };
    if let Some(password) = password {
        match reply(redis::cmd("AUTH").arg(password))? {
            Some(line) if line.starts_with('+') => {}
            Some(line) => bail!(
                "Redis at {address} refused the password: {}",
                error_text(&line)
            ),
            None => bail!("Redis at {address} closed the connection at AUTH"),
        }
    }
    match reply(redis::cmd("SHUTDOWN").arg("NOSAVE"))? {
        None => Ok(()),
        Some(line) => bail!(
            "Redis at {address} did not shut down: {}",
            error_text(&line)
        ),
    }
}

/// The text of an error reply line, without its `-`.
fn error_text(line: &str) -> &str {
    line.strip_prefix('-').unwrap_or(line)
}

/// Waits until the Redis at `address` restarted after the restore: its uptime is shorter
/// than the time since the file was placed.
pub fn wait_restarted(
    address: &str,
    password: Option<&str>,
    placed: Instant,
    timeout: Duration,
) -> anyhow::Result<()> {
    let client = redis_client(address, password)?;
    let mut last = String::from("it never answered");
    while placed.elapsed() < timeout {
        let info = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .and_then(|mut con| redis::cmd("INFO").arg("server").query::<String>(&mut con));
        match info {
            Ok(info) => {
                let uptime: u64 = info_field(&info, "uptime_in_seconds")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(u64::MAX);
                if uptime <= placed.elapsed().as_secs() {
                    println!("Redis at {address} restarted on the restored file");
                    return Ok(());
                }
                last = format!("it has not restarted since the restore (up {uptime}s)");
            }
            Err(error) => last = format!("it does not answer: {error}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("Redis at {address} did not restart within {timeout:?}: {last}")
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn a_restore_takes_only_its_kind_and_its_backups_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let key = BackupKey::generate();
        let owner = crate::backup::manifest::Owner {
            namespace: "titan-recovery".into(),
            name: "config".into(),
            uid: "u1".into(),
        };
        let store = Store::owned(dir.path(), owner).unwrap();
        let mut writer = store.begin_now(SnapshotKind::Configuration, &key).unwrap();
        writer.write_all(b"archive").unwrap();
        let manifest = writer.commit(Some(1), None).unwrap();
        let source = |backup: Option<&str>, any_owner| SourceArgs {
            dir: Some(dir.path().into()),
            from: None,
            backup: backup.map(Into::into),
            token_file: None,
            work_dir: "/tmp".into(),
            not_after: None,
            any_owner,
            s3: S3Args::default(),
        };
        let config = Some(SnapshotKind::Configuration);
        let ours = source(Some("titan-recovery/config"), false);
        assert!(accepted(&ours, config, manifest.clone()).is_ok());
        let wrong_kind = accepted(&ours, Some(SnapshotKind::Redis), manifest.clone()).unwrap_err();
        assert!(
            wrong_kind.contains("is a configuration snapshot, not a Redis one"),
            "{wrong_kind}"
        );
        let other = source(Some("titan-recovery/redis"), false);
        let foreign = accepted(&other, config, manifest.clone()).unwrap_err();
        assert!(foreign.contains("belongs to Backup titan-recovery/config (uid u1), not to Backup titan-recovery/redis"), "{foreign}");
        let deliberate = source(Some("titan-recovery/redis"), true);
        assert!(accepted(&deliberate, config, manifest.clone()).is_ok());
        assert!(
            accepted(&source(None, false), config, manifest).is_ok(),
            "a folder alone"
        );
    }

    #[test]
    fn keys_that_expired_since_the_snapshot_do_not_fail_it() {
        let expected = ExpectedKeys {
            persistent: 10,
            expiries: vec![1_000, 2_000, 3_000],
        };
        // At t=2500 two have expired: Redis may still count them, or not.
        assert!(expected.check(13, 3, 2_500).is_ok());
        assert!(expected.check(11, 1, 2_500).is_ok());
        // One that has not expired is missing.
        let short = expected.check(10, 0, 2_500).unwrap_err();
        assert!(short.contains("0 keys with a TTL"), "{short}");
        // A key without a TTL is missing, or one too many.
        assert!(
            expected
                .check(12, 3, 0)
                .unwrap_err()
                .contains("9 keys without")
        );
        assert!(expected.check(14, 3, 0).is_err());
        assert!(expected.check(14, 4, 0).is_err());
    }

    #[test]
    fn keyspace_sums_keys_and_expires_over_databases() {
        let info =
            "# Keyspace\r\ndb0:keys=12,expires=2,avg_ttl=100\r\ndb3:keys=1,expires=0,avg_ttl=0\r\n";
        assert_eq!(keyspace(info), (13, 2));
        assert_eq!(keyspace("# Keyspace\r\n"), (0, 0));
    }

    /// A fake Redis on a loopback port for one connection: for each exchange it reads the
    /// command it expects, then answers with the reply, or closes the connection on `None`.
    fn fake_redis(exchanges: Vec<(redis::Cmd, Option<&'static str>)>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            for (command, reply) in exchanges {
                let expected = command.get_packed_command();
                let mut got = vec![0u8; expected.len()];
                stream.read_exact(&mut got).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&expected)
                );
                match reply {
                    Some(reply) => stream.write_all(reply.as_bytes()).unwrap(),
                    None => return,
                }
            }
        });
        address
    }

    fn shutdown() -> redis::Cmd {
        redis::cmd("SHUTDOWN").arg("NOSAVE").clone()
    }

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[test]
    fn shutdown_authenticates_then_is_done_when_redis_closes_the_connection() {
        let auth = redis::cmd("AUTH").arg("pw with spaces").clone();
        let address = fake_redis(vec![(auth, Some("+OK\r\n")), (shutdown(), None)]);
        shutdown_nosave(&address, Some("pw with spaces"), TIMEOUT).unwrap();
        let address = fake_redis(vec![(shutdown(), None)]);
        shutdown_nosave(&address, None, TIMEOUT).unwrap();
    }

    #[test]
    fn a_redis_that_refuses_to_shut_down_or_the_password_fails_the_restore() {
        let refusal = "-ERR Errors trying to SHUTDOWN. Check logs.\r\n";
        let address = fake_redis(vec![(shutdown(), Some(refusal))]);
        let err = shutdown_nosave(&address, None, TIMEOUT).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "Redis at {address} did not shut down: ERR Errors trying to SHUTDOWN. Check logs."
            )
        );
        let wrong = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
        let auth = redis::cmd("AUTH").arg("nope").clone();
        let address = fake_redis(vec![(auth, Some(wrong))]);
        let err = shutdown_nosave(&address, Some("nope"), TIMEOUT).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "Redis at {address} refused the password: WRONGPASS"
            )),
            "{err}"
        );
    }

    #[test]
    fn an_unreachable_redis_is_named() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let err = shutdown_nosave(&address, None, TIMEOUT).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("Redis at {address} is unreachable")
        );
    }
}

//! `titan-dr backup ...`: the snapshot store from the command line, without a cluster, so
//! that an operator on a broken system can still list, check and get back the data.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use k8s_openapi::jiff::Timestamp;

use super::key::BackupKey;
use super::manifest::Manifest;
use super::restore::{
    ExpectedKeys, Replication, SourceArgs, check_keys, choose, info_field, redis_client, replicate,
};
use super::retention::RetentionPolicy;
use super::store::{Store, format_databases};
use crate::api::duration::RetentionAge;
use crate::redis::{RedisTarget, SnapshotOptions};

/// Snapshots in a folder: take, list, verify, restore, prune.
#[derive(Args, Debug)]
pub struct BackupCommand {
    #[command(subcommand)]
    command: BackupSubcommand,
}

#[derive(Subcommand, Debug)]
enum BackupSubcommand {
    /// List the snapshots of a folder, newest first, and any incomplete ones.
    List {
        /// The snapshot folder.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Check a snapshot completely: manifest, size, checksums, decryption, RDB CRC and keys.
    Verify {
        #[arg(long)]
        dir: PathBuf,
        /// The age identity file (AGE-SECRET-KEY-1...).
        #[arg(long)]
        key_file: PathBuf,
        /// Snapshot ID, or `latest`.
        #[arg(default_value = "latest", conflicts_with = "all")]
        snapshot: String,
        /// Verify every snapshot of the folder.
        #[arg(long)]
        all: bool,
    },
    /// Verify a snapshot, then load it into Redis: write its decrypted content to a file
    /// (e.g. Redis's dump.rdb, with Redis stopped or restarted after), or replicate it into a
    /// running Redis (`--replicate-to`). Nothing is touched when verification fails; for
    /// `latest`, a newest snapshot that fails is reported and the next newest tried.
    Restore {
        #[command(flatten)]
        source: SourceArgs,
        #[arg(long)]
        key_file: PathBuf,
        /// Snapshot ID, or `latest`.
        #[arg(long, default_value = "latest")]
        snapshot: String,
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
    },
    /// Restores a configuration snapshot: verifies it, then server-side applies its
    /// ConfigMaps and Secrets to a namespace (credentials from the kubeconfig or the
    /// pod's service account).
    RestoreConfig {
        #[command(flatten)]
        source: SourceArgs,
        #[arg(long)]
        key_file: PathBuf,
        #[arg(long, default_value = "latest")]
        snapshot: String,
        #[arg(long)]
        namespace: String,
    },
    /// Take a snapshot of a Redis server over the replication protocol.
    Snapshot {
        /// `host:port` of the Redis server.
        #[arg(long)]
        redis: String,
        /// ACL user (default: the default user).
        #[arg(long)]
        username: Option<String>,
        /// File holding the Redis password.
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        key_file: PathBuf,
        /// Longest silence of the server, in seconds, before the snapshot fails.
        #[arg(long, default_value_t = 60)]
        io_timeout: u64,
    },
    /// Print a new age identity (or write it to a file created with mode 0600).
    Keygen {
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Delete the snapshots that retention drops (the newest is always kept).
    Prune {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        keep_last: Option<u32>,
        /// Like 7d, 36h, 1d12h.
        #[arg(long)]
        max_age: Option<RetentionAge>,
        /// Show what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs a `titan-dr backup` command.
///
/// # Errors
///
/// Whatever failed, with a message naming the snapshot and the problem.
pub fn run(command: BackupCommand) -> anyhow::Result<()> {
    match command.command {
        BackupSubcommand::List { dir } => list(&dir),
        BackupSubcommand::Verify {
            dir,
            key_file,
            snapshot,
            all,
        } => verify(&dir, &key_file, &snapshot, all),
        BackupSubcommand::Restore {
            source,
            key_file,
            snapshot,
            to,
            replicate_to,
            advertise_host,
            then,
            shutdown_redis,
            check_redis,
            check_password_file,
            check_timeout,
        } => {
            let key = BackupKey::from_file(&key_file)?;
            let password = check_password_file
                .as_deref()
                .map(read_password)
                .transpose()?;
            let chosen = choose(&source, &key, &snapshot)?;
            let id = chosen.manifest.id.clone();
            let timeout = Duration::from_secs(check_timeout);
            if let Some(address) = replicate_to {
                let rdb = source.work_dir.join(format!("titan-dr-restore-{id}.rdb"));
                let _removed = RemoveOnDrop(rdb.clone());
                chosen
                    .store
                    .restore(&id, &key, &rdb)
                    .context("refusing to restore; Redis is untouched")?;
                let expected = ExpectedKeys::of_rdb(&rdb)?;
                println!(
                    "verified snapshot {id} ({}, {})",
                    human_bytes(chosen.manifest.plaintext.size_bytes),
                    describe_keys(&chosen.manifest)
                );
                let replication = Replication {
                    address: &address,
                    password: password.as_deref(),
                    advertise_host: &advertise_host,
                    timeout,
                };
                replicate(&rdb, &replication)?;
                return check_keys(&address, password.as_deref(), &expected, timeout);
            }
            let to = to.context("give --to or --replicate-to")?;
            let manifest = chosen
                .store
                .restore(&id, &key, &to)
                .with_context(|| format!("refusing to restore; {} is untouched", to.display()))?;
            let expected = ExpectedKeys::of_rdb(&to)?;
            let placed = std::time::Instant::now();
            println!(
                "restored snapshot {id} to {} ({}, {})",
                to.display(),
                human_bytes(manifest.plaintext.size_bytes),
                describe_keys(&manifest)
            );
            if let Some(command) = then {
                let status = std::process::Command::new("/bin/sh")
                    .args(["-c", &command])
                    .status()?;
                if !status.success() {
                    bail!("the command after the restore failed ({status}): {command}");
                }
            }
            if let (true, Some(address)) = (shutdown_redis, &check_redis) {
                shutdown_nosave(address, password.as_deref(), Duration::from_secs(10))?;
                println!("sent SHUTDOWN NOSAVE to Redis at {address}");
            }
            if let Some(address) = check_redis {
                wait_restarted(&address, password.as_deref(), placed, timeout)?;
                check_keys(&address, password.as_deref(), &expected, timeout)?;
            }
            Ok(())
        }
        BackupSubcommand::RestoreConfig {
            source,
            key_file,
            snapshot,
            namespace,
        } => {
            let key = BackupKey::from_file(&key_file)?;
            let chosen = choose(&source, &key, &snapshot)?;
            let id = chosen.manifest.id.clone();
            if chosen.manifest.kind != super::manifest::SnapshotKind::Configuration {
                bail!("snapshot {id} is not a configuration snapshot; nothing was applied");
            }
            let archive = source
                .work_dir
                .join(format!("titan-dr-restore-{}-{id}.tar", std::process::id()));
            let _removed = RemoveOnDrop(archive.clone());
            chosen
                .store
                .restore(&id, &key, &archive)
                .context("refusing to restore; nothing was applied")?;
            let entries = fs::File::open(&archive).and_then(super::config_archive::read)?;
            let handle = tokio::runtime::Handle::current();
            let applied = handle.block_on(super::config_archive::apply(entries, &namespace))?;
            println!(
                "restored snapshot {id}: applied {} objects to namespace {namespace}",
                applied.len()
            );
            for path in applied {
                println!("  {path}");
            }
            Ok(())
        }
        BackupSubcommand::Snapshot {
            redis,
            username,
            password_file,
            dir,
            key_file,
            io_timeout,
        } => {
            let key = BackupKey::from_file(&key_file)?;
            let password = password_file.as_deref().map(read_password).transpose()?;
            let store = Store::open(&dir)?;
            let target = RedisTarget {
                address: redis,
                username,
                password,
            };
            let options = SnapshotOptions {
                io_timeout: Duration::from_secs(io_timeout),
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
            Ok(())
        }
        BackupSubcommand::Keygen { output } => keygen(output.as_deref()),
        BackupSubcommand::Prune {
            dir,
            keep_last,
            max_age,
            dry_run,
        } => {
            let store = existing_store(&dir)?;
            let policy = RetentionPolicy {
                keep_last,
                max_age: max_age.as_ref().map(RetentionAge::duration),
            };
            let ids = if dry_run {
                store.select_pruned(&policy, Timestamp::now())?
            } else {
                store.prune(&policy, Timestamp::now())?
            };
            let verb = if dry_run { "would delete" } else { "deleted" };
            for id in &ids {
                println!("{verb} {id}");
            }
            println!("{verb} {} snapshot(s)", ids.len());
            Ok(())
        }
    }
}

fn list(dir: &Path) -> anyhow::Result<()> {
    let listing = existing_store(dir)?.list()?;
    if listing.snapshots.is_empty() && listing.problems.is_empty() {
        println!("no snapshots in {}", dir.display());
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

fn verify(dir: &Path, key_file: &Path, which: &str, all: bool) -> anyhow::Result<()> {
    let store = existing_store(dir)?;
    let key = BackupKey::from_file(key_file)?;
    let (ids, incomplete) = if all {
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
        (vec![store.resolve(which)?], 0)
    };
    let failed = verify_each(&store, &key, &ids) + incomplete;
    if failed > 0 {
        let total = ids.len() + incomplete;
        bail!("{failed} of {total} snapshot(s) failed verification");
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
        bail!("{} is not a folder", dir.display());
    }
    Ok(Store::open(dir)?)
}

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

/// Stops the Redis at `address` with `SHUTDOWN NOSAVE`, so that it exits without writing its
/// dataset over the file just restored. Done when the server closes the connection; an error
/// reply (a refused password, `Errors trying to SHUTDOWN`) is the error. Plain RESP over a
/// socket: a client library would send commands of its own first.
fn shutdown_nosave(address: &str, password: Option<&str>, timeout: Duration) -> anyhow::Result<()> {
    use std::io::{BufRead, BufReader, ErrorKind};
    use std::net::{TcpStream, ToSocketAddrs};
    let unreachable = || format!("Redis at {address} is unreachable");
    let mut last = std::io::Error::new(ErrorKind::NotFound, "the name resolves to no address");
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
fn wait_restarted(
    address: &str,
    password: Option<&str>,
    placed: std::time::Instant,
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

/// Removes a temporary file when the restore ends, however it ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

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

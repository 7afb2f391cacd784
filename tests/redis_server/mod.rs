//! A real `redis-server` for tests: on a free loopback port, in a temporary folder, in its
//! own process group (so that killing it also kills a fork saving the RDB), killed when the
//! guard drops.
#![allow(dead_code)] // each test binary uses a different part of it

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    password: Option<String>,
    /// Keeps the folder alive when the server made it.
    _temp: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// A server with an empty dataset in a fresh temporary folder.
    pub fn start(extra: &[&str]) -> Self {
        let temp = tempfile::tempdir().expect("temporary folder");
        let dir = temp.path().to_owned();
        let mut server = Self::start_in(&dir, extra);
        server._temp = Some(temp);
        server
    }

    /// A server working in `dir`; it loads `dir/dump.rdb` when there is one.
    pub fn start_in(dir: &Path, extra: &[&str]) -> Self {
        let password = extra
            .windows(2)
            .find(|pair| pair[0] == "--requirepass")
            .map(|pair| pair[1].to_owned());
        let mut last_log = String::new();
        // A port found free can be taken by someone else before the server binds it.
        for _ in 0..3 {
            let port = free_port();
            let log = dir.join(format!("redis-{port}.log"));
            let mut command = Command::new("redis-server");
            command
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir)
                .args(["--dbfilename", "dump.rdb"])
                .args(["--logfile"])
                .arg(&log)
                .args(["--enable-debug-command", "local"])
                // Tests need no wait for more replicas to join a diskless sync.
                .args(["--repl-diskless-sync-delay", "0"])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0);
            let child = command.spawn().expect("redis-server is installed");
            let mut server = Self {
                child,
                port,
                dir: dir.to_owned(),
                password: password.clone(),
                _temp: None,
            };
            if server.wait_ready(Duration::from_secs(20)) {
                return server;
            }
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
            server.kill();
        }
        panic!("redis-server did not start:\n{last_log}");
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> redis::Connection {
        self.client_db(0)
    }

    pub fn client_db(&self, db: i64) -> redis::Connection {
        // No URL: a password may hold `/`, `%` or `#`.
        let mut settings = redis::RedisConnectionInfo::default().set_db(db);
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        redis::IntoConnectionInfo::into_connection_info(("127.0.0.1", self.port))
            .map(|info| info.set_redis_settings(settings))
            .and_then(redis::Client::open)
            .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(5)))
            .expect("connecting to the test redis-server")
    }

    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let url = format!("redis://127.0.0.1:{}/", self.port);
            let pong = redis::Client::open(url)
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut con| {
                    // With requirepass, PING answers NOAUTH: that is ready enough.
                    match redis::cmd("PING").query::<String>(&mut con) {
                        Err(err) if err.code() == Some("NOAUTH") => Ok("PONG".into()),
                        other => other,
                    }
                });
            match pong {
                Ok(_) => return true,
                // Still loading a dump.rdb: not ready yet.
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        false
    }

    /// SIGKILL to the whole process group: the server and any child saving an RDB.
    pub fn kill(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) with a negative pid signals the group this guard created.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

//! The redis probe: PING, or the key count of every database, over one connection.

use ::redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

use super::{DEFAULT_TIMEOUT, ProbeError, RedisCheck, RedisProbe};

/// Connects to `probe.address` (AUTH with `password`, if any) and runs the check: `PONG`, or
/// `{"keys": N}`.
pub fn check(probe: &RedisProbe, password: Option<&str>) -> Result<String, ProbeError> {
    let address = &probe.address;
    let failed = |e: ::redis::RedisError| ProbeError::new(format!("Redis at {address}: {e}"));
    let (host, port) = address
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host.trim_matches(['[', ']']), port.parse().ok()?)))
        .ok_or_else(|| ProbeError::new(format!("{address:?} is not host:port")))?;
    // Settings, not a redis:// URL, so that any password works as it is (`/`, `%`, `#`).
    let mut settings = RedisConnectionInfo::default();
    if let Some(password) = password {
        settings = settings.set_password(password);
    }
    let info = ConnectionAddr::Tcp(host.to_owned(), port)
        .into_connection_info()
        .map_err(failed)?
        .set_redis_settings(settings);
    let mut connection = ::redis::Client::open(info)
        .and_then(|client| client.get_connection_with_timeout(DEFAULT_TIMEOUT))
        .map_err(failed)?;
    connection
        .set_read_timeout(Some(DEFAULT_TIMEOUT))
        .map_err(failed)?;
    match probe.check.unwrap_or_default() {
        RedisCheck::Ping => ::redis::cmd("PING")
            .query::<String>(&mut connection)
            .map_err(failed),
        RedisCheck::KeyCount => {
            // INFO keyspace has every database's count in one reply, where DBSIZE would need
            // a SELECT of each.
            let info: String = ::redis::cmd("INFO")
                .arg("keyspace")
                .query(&mut connection)
                .map_err(failed)?;
            let (keys, _) = crate::backup::restore::keyspace(&info);
            Ok(serde_json::json!({ "keys": keys }).to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use super::*;

    /// A password a URL would mangle.
    const PASSWORD: &str = "p/a%2s#s w";

    /// A real redis-server on a loopback port with [`PASSWORD`], killed (by its PID) on drop.
    struct Server {
        child: Child,
        port: u16,
        address: String,
    }

    impl Server {
        fn start() -> Server {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let dir = std::env::temp_dir();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--requirepass",
                    PASSWORD,
                ])
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("redis-server is installed");
            let server = Server {
                child,
                port,
                address: format!("127.0.0.1:{port}"),
            };
            let started = Instant::now();
            while std::net::TcpStream::connect(&server.address).is_err() {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "no redis-server"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            server
        }

        fn probe(&self, check: RedisCheck) -> RedisProbe {
            RedisProbe {
                address: self.address.clone(),
                password_secret_ref: None,
                check: Some(check),
            }
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn ping_and_key_count_with_a_password_a_url_would_break() {
        let server = Server::start();
        let ping = server.probe(RedisCheck::Ping);
        assert_eq!(check(&ping, Some(PASSWORD)), Ok("PONG".to_owned()));
        let count = server.probe(RedisCheck::KeyCount);
        assert_eq!(check(&count, Some(PASSWORD)).unwrap(), r#"{"keys":0}"#);

        // Keys in two databases are summed.
        let mut writer = ::redis::Client::open(
            ConnectionAddr::Tcp("127.0.0.1".into(), server.port)
                .into_connection_info()
                .unwrap()
                .set_redis_settings(RedisConnectionInfo::default().set_password(PASSWORD)),
        )
        .unwrap()
        .get_connection()
        .unwrap();
        for (db, keys) in [(0, ["a", "b"].as_slice()), (3, ["c"].as_slice())] {
            ::redis::cmd("SELECT").arg(db).exec(&mut writer).unwrap();
            for key in keys {
                ::redis::cmd("SET")
                    .arg(key)
                    .arg(1)
                    .exec(&mut writer)
                    .unwrap();
            }
        }
        assert_eq!(check(&count, Some(PASSWORD)).unwrap(), r#"{"keys":3}"#);
    }

    #[test]
    fn a_wrong_password_or_an_absent_server_fails_naming_the_address() {
        let server = Server::start();
        let ping = server.probe(RedisCheck::Ping);
        let error = check(&ping, Some("wrong")).expect_err("refused");
        assert!(
            error
                .message
                .starts_with(&format!("Redis at {}: ", server.address)),
            "{error}"
        );
        let error = check(&ping, None).expect_err("NOAUTH");
        assert!(error.message.contains("NOAUTH"), "{error}");
        let address = server.address.clone();
        drop(server);
        let error = check(
            &RedisProbe {
                address: address.clone(),
                ..ping
            },
            None,
        )
        .expect_err("nothing listens");
        assert!(
            error.message.starts_with(&format!("Redis at {address}: ")),
            "{error}"
        );
        let error = check(
            &RedisProbe {
                address: "redis".into(),
                ..Default::default()
            },
            None,
        )
        .expect_err("no port");
        assert_eq!(error.message, r#""redis" is not host:port"#);
    }
}

//! The http probe: one GET, judged by its status; the body is the output.

use super::{DEFAULT_TIMEOUT, HttpProbe, ProbeError};

/// More than a health endpoint sends; only the tail of the output is judged anyway.
const MAX_BODY: usize = 1 << 20;

/// GETs `probe.url`; the body when the status is the expected one.
pub async fn get(probe: &HttpProbe) -> Result<String, ProbeError> {
    let url = &probe.url;
    let timeout = probe
        .timeout
        .as_ref()
        .map_or(DEFAULT_TIMEOUT, |t| t.duration());
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| ProbeError::new(format!("{url} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ProbeError::new(format!("{url} is not an http(s) URL")));
    }
    let failed = |e: reqwest::Error| ProbeError::new(format!("GET {url}: {}", error_chain(&e)));
    crate::tls::install_provider();
    let mut response = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(failed)?
        .get(parsed)
        .send()
        .await
        .map_err(failed)?;
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BODY {
            body.truncate(MAX_BODY);
            break;
        }
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    let expected = match probe.status {
        Some(code) => code == status.as_u16(),
        None => status.is_success(),
    };
    if expected {
        return Ok(body);
    }
    let wanted = probe
        .status
        .map_or_else(|| "2xx".to_owned(), |code| code.to_string());
    Err(
        ProbeError::new(format!("GET {url} answered {status}, expected {wanted}"))
            .with_output(body),
    )
}

/// The client's error and its causes: its own text alone says only "client error (Connect)".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response, StatusCode};
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::*;

    /// A real HTTP server on a loopback port that answers every request with `status` and
    /// `body`; it stops with the test's runtime.
    async fn serve(status: u16, body: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = service_fn(move |_: Request<hyper::body::Incoming>| async move {
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    *response.status_mut() = StatusCode::from_u16(status).unwrap();
                    Ok::<_, Infallible>(response)
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        format!("http://{address}/health")
    }

    fn probe(url: &str, status: Option<u16>) -> HttpProbe {
        HttpProbe {
            url: url.into(),
            status,
            timeout: Some("5s".parse().unwrap()),
        }
    }

    #[tokio::test]
    async fn a_2xx_answer_is_the_output_and_expect_judges_its_json() {
        let url = serve(200, r#"{"status":"ok","trading":true}"#).await;
        let body = get(&probe(&url, None)).await.expect("2xx passes");
        let expect: crate::api::disaster_recovery::Expect =
            serde_yaml::from_str("{json: {path: trading, equals: 'true'}}").unwrap();
        let finished = crate::expect::Finished {
            exit_code: Some(0),
            output: body,
            timed_out: false,
        };
        let verdict = crate::expect::judge(Some(&expect), &finished, None);
        assert_eq!(verdict.message, "");
    }

    #[tokio::test]
    async fn another_status_fails_naming_url_and_status_and_keeps_the_body() {
        let url = serve(503, "degraded").await;
        let error = get(&probe(&url, None)).await.expect_err("503 is not 2xx");
        assert_eq!(
            error.message,
            format!("GET {url} answered 503 Service Unavailable, expected 2xx")
        );
        assert_eq!(error.output, "degraded");
        // An expected non-2xx status passes; an unexpected 2xx fails.
        assert_eq!(get(&probe(&url, Some(503))).await.unwrap(), "degraded");
        let ok = serve(200, "fine").await;
        let error = get(&probe(&ok, Some(204))).await.expect_err("not 204");
        assert!(
            error.message.ends_with("answered 200 OK, expected 204"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_fails_naming_the_url() {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/");
        let error = get(&probe(&url, None)).await.expect_err("refused");
        assert!(
            error.message.starts_with(&format!("GET {url}: ")),
            "{error}"
        );
        assert!(error.message.to_lowercase().contains("refused"), "{error}");
        let error = get(&probe("ftp://x/", None)).await.expect_err("scheme");
        assert_eq!(error.message, "ftp://x/ is not an http(s) URL");
    }
}

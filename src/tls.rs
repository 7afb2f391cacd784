//! TLS for every HTTP client (kube's, the snapshot endpoint's, object storage's): rustls on
//! the ring provider, the one kube uses, so that no second crypto library is built.

/// Makes ring rustls's process-wide provider, once; reqwest (built without one) needs it
/// before any client exists. Later calls do nothing.
pub fn install_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Fails only when another provider was installed first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

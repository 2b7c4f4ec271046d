//! AWS SigV4 for Prometheus backends behind AWS IAM (Amazon Managed Service for
//! Prometheus): every request is signed for service `aps` in the backend's region, with
//! credentials from the AWS default chain (environment, web identity / IRSA, profiles,
//! container and instance metadata) — the chain the SQS source uses.
//!
//! The signature covers the method, path, query string, the request's own headers and a
//! hash of the form-encoded body, so a body changed on the way is refused by the backend.
//! Credentials are fetched on the first signed call, kept until five minutes before they
//! expire, then fetched again; they are never logged.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};

use crate::source::error_chain;

/// The service name Amazon Managed Service for Prometheus signs with.
pub const SERVICE: &str = "aps";

/// Credentials expiring sooner than this are fetched again before signing.
const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);

/// Where a signer's credentials come from.
enum Provider {
    /// The AWS default chain, loaded on the first signed call (no IMDS probe at start-up).
    DefaultChain(tokio::sync::OnceCell<Option<SharedCredentialsProvider>>),
    /// A given provider (tests and tools).
    Given(SharedCredentialsProvider),
}

/// Signs one backend's requests with SigV4 for [`SERVICE`] in `region`.
pub struct Signer {
    region: String,
    provider: Provider,
    cached: tokio::sync::Mutex<Option<Credentials>>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the credentials.
        f.debug_struct("Signer")
            .field("region", &self.region)
            .field("service", &SERVICE)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer whose credentials come from the AWS default chain.
    pub fn default_chain(region: &str) -> Signer {
        Signer {
            region: region.to_string(),
            provider: Provider::DefaultChain(tokio::sync::OnceCell::new()),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// A signer whose credentials come from `provider`.
    pub fn with_provider(region: &str, provider: impl ProvideCredentials + 'static) -> Signer {
        Signer {
            region: region.to_string(),
            provider: Provider::Given(SharedCredentialsProvider::new(provider)),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    async fn provider(&self) -> Result<&SharedCredentialsProvider, String> {
        match &self.provider {
            Provider::Given(p) => Ok(p),
            Provider::DefaultChain(cell) => cell
                .get_or_init(|| async {
                    aws_config::defaults(BehaviorVersion::latest())
                        .region(Region::new(self.region.clone()))
                        .load()
                        .await
                        .credentials_provider()
                })
                .await
                .as_ref()
                .ok_or_else(|| "the AWS default chain has no credentials provider".to_string()),
        }
    }

    /// Usable credentials: the cached ones while they are valid for five more minutes,
    /// else fresh ones from the provider (one fetch at a time). Expired credentials are
    /// an error, never used.
    pub async fn credentials(&self) -> Result<Credentials, String> {
        let mut cached = self.cached.lock().await;
        let now = SystemTime::now();
        if let Some(c) = cached.as_ref() {
            if c.expiry().is_none_or(|at| at > now + REFRESH_BEFORE) {
                return Ok(c.clone());
            }
        }
        let fresh = self
            .provider()
            .await?
            .provide_credentials()
            .await
            .map_err(|e| format!("no usable AWS credentials: {}", error_chain(&e)))?;
        if let Some(at) = fresh.expiry() {
            if at <= now {
                *cached = None;
                return Err(format!("the AWS credentials expired {}", when(at)));
            }
        }
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    /// Signs `req` (its method, URL, headers and body as built) and adds the signature's
    /// headers (`Authorization`, `X-Amz-Date`, `X-Amz-Security-Token` for temporary
    /// credentials).
    pub async fn sign(&self, req: &mut reqwest::Request) -> Result<(), String> {
        let credentials = self.credentials().await?;
        self.sign_with(req, credentials, SystemTime::now())
    }

    fn sign_with(
        &self,
        req: &mut reqwest::Request,
        credentials: Credentials,
        at: SystemTime,
    ) -> Result<(), String> {
        let identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(SERVICE)
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("cannot sign the request: {e}"))?
            .into();
        let body = req.body().map(|b| b.as_bytes()).unwrap_or(Some(&[]));
        let Some(body) = body else {
            return Err("cannot sign a streamed body".into());
        };
        let headers: Vec<(&str, &str)> = req
            .headers()
            .iter()
            .filter(|(k, _)| *k != AUTHORIZATION)
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
            .collect();
        let signable = SignableRequest::new(
            req.method().as_str(),
            req.url().as_str(),
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| format!("cannot sign the request: {e}"))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| format!("cannot sign the request: {e}"))?
            .into_parts();
        let (headers, _) = instructions.into_parts();
        for header in headers {
            let name = HeaderName::from_bytes(header.name().as_bytes())
                .map_err(|e| format!("cannot sign the request: {e}"))?;
            let mut value = HeaderValue::from_str(header.value())
                .map_err(|e| format!("cannot sign the request: {e}"))?;
            // Kept out of any Debug output: the token, and the signature with its key ID.
            value.set_sensitive(header.sensitive() || name == AUTHORIZATION);
            req.headers_mut().insert(name, value);
        }
        Ok(())
    }
}

/// When `at` is, for a message: "at" and its RFC 3339 form, or "before 1970-01-01T00:00:00Z"
/// / "after 9999-12-31T23:59:59Z" outside what humantime can format (it panics on a time
/// before 1970, which a credentials provider may hand out).
fn when(at: SystemTime) -> String {
    // The first second of the year 10000.
    const YEAR_10000: u64 = 253_402_300_800;
    match at.duration_since(UNIX_EPOCH) {
        Ok(since) if since.as_secs() < YEAR_10000 => {
            format!("at {}", humantime::format_rfc3339_seconds(at))
        }
        Ok(_) => "after 9999-12-31T23:59:59Z".to_string(),
        Err(_) => "before 1970-01-01T00:00:00Z".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use aws_credential_types::provider::error::CredentialsError;
    use aws_credential_types::provider::future;

    use super::*;

    /// Hands out `expiry`-bound credentials (or an error) and counts the calls.
    #[derive(Debug, Clone)]
    struct Counting {
        calls: Arc<AtomicUsize>,
        expiry: Option<SystemTime>,
        fail: bool,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            self.calls.fetch_add(1, Ordering::SeqCst);
            future::ProvideCredentials::ready(if self.fail {
                Err(CredentialsError::not_loaded("no credentials in this test"))
            } else {
                Ok(Credentials::new(
                    "AKIDTEST",
                    "secret-test-key",
                    Some("session-token".into()),
                    self.expiry,
                    "test",
                ))
            })
        }
    }

    fn signer(expiry: Option<SystemTime>, fail: bool) -> (Signer, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let provider = Counting {
            calls: calls.clone(),
            expiry,
            fail,
        };
        (Signer::with_provider("eu-west-1", provider), calls)
    }

    fn request() -> reqwest::Request {
        reqwest::Client::new()
            .post("https://aps-workspaces.eu-west-1.amazonaws.com/workspaces/ws-1/api/v1/query")
            .form(&[("query", "up"), ("timeout", "5000ms")])
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn long_lived_credentials_are_fetched_once() {
        let (signer, calls) = signer(Some(SystemTime::now() + Duration::from_secs(3600)), false);
        for _ in 0..3 {
            signer.sign(&mut request()).await.unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn credentials_about_to_expire_are_fetched_again() {
        let (signer, calls) = signer(Some(SystemTime::now() + Duration::from_secs(60)), false);
        signer.sign(&mut request()).await.unwrap();
        signer.sign(&mut request()).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn expired_credentials_are_refused() {
        let (signer, _) = signer(Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1)), false);
        let err = signer.sign(&mut request()).await.unwrap_err();
        assert_eq!(
            err, "the AWS credentials expired at 1970-01-01T00:00:01Z",
            "{err}"
        );
    }

    /// `credential_process` may answer any `Expiration`, 1969 included: refused, no panic.
    #[tokio::test]
    async fn credentials_expired_before_1970_are_refused() {
        let before_epoch = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        let (signer, _) = signer(Some(before_epoch), false);
        let err = signer.sign(&mut request()).await.unwrap_err();
        assert_eq!(
            err, "the AWS credentials expired before 1970-01-01T00:00:00Z",
            "{err}"
        );
    }

    #[test]
    fn every_time_is_said_without_a_panic() {
        let epoch = SystemTime::UNIX_EPOCH;
        let cases = [
            (epoch, "at 1970-01-01T00:00:00Z"),
            (
                epoch + Duration::from_secs(253_402_300_799),
                "at 9999-12-31T23:59:59Z",
            ),
            (
                epoch + Duration::from_secs(253_402_300_800),
                "after 9999-12-31T23:59:59Z",
            ),
            (
                epoch - Duration::from_nanos(1),
                "before 1970-01-01T00:00:00Z",
            ),
        ];
        for (at, said) in cases {
            assert_eq!(when(at), said, "{at:?}");
        }
        // The far ends of what the platform holds.
        for secs in [i64::MAX as u64 / 2, u64::MAX / 4] {
            if let Some(at) = epoch.checked_add(Duration::from_secs(secs)) {
                assert_eq!(when(at), "after 9999-12-31T23:59:59Z");
            }
            if let Some(at) = epoch.checked_sub(Duration::from_secs(secs)) {
                assert_eq!(when(at), "before 1970-01-01T00:00:00Z");
            }
        }
    }

    #[tokio::test]
    async fn missing_credentials_are_refused_with_the_reason() {
        let (signer, _) = signer(None, true);
        let err = signer.sign(&mut request()).await.unwrap_err();
        assert!(
            err.starts_with("no usable AWS credentials")
                && err.contains("no credentials in this test"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn signature_headers_are_added_and_hidden() {
        let (signer, _) = signer(None, false);
        let mut req = request();
        signer.sign(&mut req).await.unwrap();
        let auth = req.headers().get(AUTHORIZATION).unwrap();
        assert!(auth.is_sensitive());
        let auth = auth.to_str().unwrap();
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/")
                && auth.contains("/eu-west-1/aps/aws4_request")
                && auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token"),
            "{auth}"
        );
        assert!(req.headers().contains_key("x-amz-date"));
        assert!(req.headers()["x-amz-security-token"].is_sensitive());
        assert!(!format!("{signer:?}").contains("secret-test-key"));
    }
}

//! The AWS SQS source: one `GetQueueAttributes` call gives a queue's visible, in-flight
//! and delayed message counts.
//!
//! Credentials come from the AWS default chain (environment, IRSA web identity, profile,
//! IMDS), loaded once. One SQS client exists per (region, endpoint, role) and is reused;
//! a bare queue name is resolved once with `GetQueueUrl`. A call asks for the counts the
//! query names (KEDA's `scaleOnInFlight` and `scaleOnDelayed`) and needs every one of them
//! in the answer; the caller sums the [`QueueDepth`] with [`QueueDepth::total`].
//!
//! Errors name the queue as the trigger gave it and never carry credentials: a queue with
//! `@` (a user or password) is refused unquoted. The call's
//! deadline and its accounting (backend `sqs`) belong to [`crate::source::Sources::fetch`],
//! which bounds a fetch whether or not it also had to resolve a queue name.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use aws_config::sts::AssumeRoleProvider;
use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_sqs::config::interceptors::BeforeDeserializationInterceptorContextMut;
use aws_sdk_sqs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::Client;
use aws_smithy_types::body::SdkBody;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::source::{error_chain, QueueDepth, Reading, SourceError, SqsQuery};

mod parse;

pub use parse::{
    classify_error, depth_attributes, depth_from_attributes, region_from_queue_url, resolve_region,
    ErrorClass, QueueRef,
};

/// The backend label of every SQS call in metrics and errors.
const BACKEND: &str = "sqs";

/// The session name of roles assumed for triggers (visible in the role owner's CloudTrail).
const ROLE_SESSION_NAME: &str = "slo-scaler";

/// How many distinct (region, endpoint, role) clients are kept.
const MAX_CLIENTS: u64 = 256;

/// How many resolved queue names are kept.
const MAX_QUEUE_URLS: u64 = 4096;

/// The largest SQS answer read. SQS's are well under a KiB; the SDK would otherwise buffer
/// whatever an endpoint posing as SQS (`--aws-endpoint`) sends.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The scaler's SQS settings, from the operator's flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SqsConfig {
    /// `--aws-endpoint`: the SQS endpoint for every trigger (an emulator, a VPC endpoint).
    /// `None` uses the region's public endpoint (or `AWS_ENDPOINT_URL_SQS`).
    pub endpoint: Option<String>,
    /// `--aws-region`: the region for queues whose trigger and URL name none. `None` uses
    /// the AWS default chain (`AWS_REGION`, profile, IMDS).
    pub region: Option<String>,
}

/// Which client a query goes through.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    region: String,
    endpoint: Option<String>,
    role_arn: Option<String>,
}

/// Makes the loader of the base AWS configuration (called again if a load is abandoned).
type LoaderFn = Box<dyn Fn() -> ConfigLoader + Send + Sync>;

/// Reads SQS queue depths. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct SqsSource {
    /// The base AWS configuration (default credential chain), loaded once.
    base: tokio::sync::OnceCell<SdkConfig>,
    loader: LoaderFn,
    config: SqsConfig,
    clients: moka::future::Cache<ClientKey, Client>,
    queue_urls: moka::future::Cache<(ClientKey, String), String>,
    clients_created: AtomicUsize,
}

impl std::fmt::Debug for SqsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsSource")
            .field("config", &self.config)
            .field("loaded", &self.base.initialized())
            .field("clients_created", &self.clients_created())
            .finish_non_exhaustive()
    }
}

impl SqsSource {
    /// Loads the AWS default chain now (credentials themselves are fetched on the first
    /// call) and creates the source.
    pub async fn new(config: SqsConfig) -> Self {
        let source = Self::lazy(config);
        source.base().await;
        source
    }

    /// Like [`SqsSource::new`], but the AWS default chain is loaded on the first fetch:
    /// a server with no SQS trigger never looks for AWS configuration (no IMDS probe at
    /// start-up), and building the source needs no runtime.
    pub fn lazy(config: SqsConfig) -> Self {
        Self::with_loader(|| aws_config::defaults(BehaviorVersion::latest()), config)
    }

    /// Like [`SqsSource::lazy`], from prepared loaders: tests and tools set credentials or
    /// an endpoint on them (e.g. `.credentials_provider(…)`, `.endpoint_url(…)`). The
    /// loader's endpoint also serves STS when a trigger assumes a role; `config.endpoint`
    /// is for SQS only, as KEDA's `awsEndpoint`.
    pub fn with_loader(
        loader: impl Fn() -> ConfigLoader + Send + Sync + 'static,
        config: SqsConfig,
    ) -> Self {
        SqsSource {
            base: tokio::sync::OnceCell::new(),
            loader: Box::new(loader),
            config,
            clients: moka::future::Cache::new(MAX_CLIENTS),
            queue_urls: moka::future::Cache::new(MAX_QUEUE_URLS),
            clients_created: AtomicUsize::new(0),
        }
    }

    /// The base configuration, loaded on first use with `--aws-region` applied.
    async fn base(&self) -> &SdkConfig {
        self.base
            .get_or_init(|| async {
                let loader = (self.loader)();
                let loader = match &self.config.region {
                    Some(region) => loader.region(Region::new(region.clone())),
                    None => loader,
                };
                loader.load().await
            })
            .await
    }

    /// How many SQS clients this source has created so far (each with its own connection
    /// pool and, for a role, its own STS session).
    pub fn clients_created(&self) -> usize {
        self.clients_created.load(Ordering::Relaxed)
    }

    /// Reads the queue's counts with one `GetQueueAttributes` call (plus one `GetQueueUrl`
    /// the first time a bare name is seen).
    pub async fn fetch(&self, q: &SqsQuery) -> Result<Reading, SourceError> {
        // Boxed: the SDK's futures are deep enough to exceed the compiler's layout
        // recursion limit in callers that nest this one (the cache, the gRPC service).
        Box::pin(self.depth(q)).await.map(Reading::Queue)
    }

    async fn depth(&self, q: &SqsQuery) -> Result<QueueDepth, SourceError> {
        if q.queue.contains('@') {
            // Every error below quotes the queue: one with a user or password is refused
            // unquoted, and never sent (the trigger parser refuses it first).
            return Err(SourceError::BadQuery {
                backend: BACKEND.to_string(),
                detail: "the queue URL holds a user or password (an SQS queue URL has none); it is not repeated here".to_string(),
            });
        }
        let queue = QueueRef::parse(&q.queue).ok_or_else(|| SourceError::BadQuery {
            backend: BACKEND.to_string(),
            detail: "empty queue URL".to_string(),
        })?;
        let default_region = self.base().await.region().map(Region::as_ref);
        let key = self.client_key(q, queue, default_region)?;
        let client = self.client(&key).await;
        let url = match queue {
            QueueRef::Url(url) => url.to_string(),
            QueueRef::Name(name) => self.queue_url(&client, &key, name).await?,
        };
        let call = client
            .get_queue_attributes()
            .queue_url(&url)
            .set_attribute_names(Some(depth_attributes(q.in_flight, q.delayed)));
        match call.send().await {
            Ok(out) => {
                depth_from_attributes(out.attributes(), q.in_flight, q.delayed).map_err(|detail| {
                    SourceError::BadResponse {
                        backend: BACKEND.to_string(),
                        detail: format!("queue {:?}: {detail}", q.queue),
                    }
                })
            }
            Err(err) => {
                let err = self.map_error(&err, &q.queue);
                if let (QueueRef::Name(name), SourceError::NotFound { .. }) = (queue, &err) {
                    // The queue was deleted since its name was resolved: resolve again next time.
                    self.queue_urls
                        .invalidate(&(key.clone(), name.to_string()))
                        .await;
                }
                Err(err)
            }
        }
    }

    fn client_key(
        &self,
        q: &SqsQuery,
        queue: QueueRef<'_>,
        default_region: Option<&str>,
    ) -> Result<ClientKey, SourceError> {
        let region = resolve_region(
            q.region.as_deref(),
            queue,
            self.config.region.as_deref(),
            default_region,
        )
        .ok_or_else(|| SourceError::BadQuery {
            backend: BACKEND.to_string(),
            detail: format!(
                "queue {:?}: no AWS region (set awsRegion on the trigger, use a queue URL, or set --aws-region)",
                q.queue
            ),
        })?;
        let endpoint = q
            .endpoint
            .as_deref()
            .or(self.config.endpoint.as_deref())
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string);
        let role_arn = q
            .role_arn
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_string);
        Ok(ClientKey {
            region,
            endpoint,
            role_arn,
        })
    }

    /// The client for `key`, created on first use; concurrent first uses create one.
    async fn client(&self, key: &ClientKey) -> Client {
        self.clients
            .get_with_by_ref(key, async {
                self.clients_created.fetch_add(1, Ordering::Relaxed);
                self.build_client(key).await
            })
            .await
    }

    async fn build_client(&self, key: &ClientKey) -> Client {
        let base = self.base().await;
        let region = Region::new(key.region.clone());
        let mut conf = aws_sdk_sqs::config::Builder::from(base).region(region.clone());
        if let Some(endpoint) = &key.endpoint {
            conf = conf.endpoint_url(endpoint);
        }
        if let Some(role_arn) = &key.role_arn {
            // The role is assumed with the default chain's credentials, in the queue's
            // region; the provider refreshes the session before it expires.
            let provider = AssumeRoleProvider::builder(role_arn)
                .session_name(ROLE_SESSION_NAME)
                .region(region)
                .configure(base)
                .build()
                .await;
            conf = conf.credentials_provider(provider);
        }
        Client::from_conf(conf.interceptor(AnswerLimit).build())
    }

    /// Resolves a bare queue name with `GetQueueUrl`, once per (client, name).
    async fn queue_url(
        &self,
        client: &Client,
        key: &ClientKey,
        name: &str,
    ) -> Result<String, SourceError> {
        self.queue_urls
            .try_get_with((key.clone(), name.to_string()), async {
                let out = client
                    .get_queue_url()
                    .queue_name(name)
                    .send()
                    .await
                    .map_err(|err| self.map_error(&err, name))?;
                out.queue_url.filter(|url| !url.is_empty()).ok_or_else(|| {
                    SourceError::BadResponse {
                        backend: BACKEND.to_string(),
                        detail: format!("queue {name:?}: GetQueueUrl answered no URL"),
                    }
                })
            })
            .await
            .map_err(|err: Arc<SourceError>| (*err).clone())
    }

    /// Maps an SDK error to a [`SourceError`] naming `queue`. AWS error messages name
    /// principals and resources, never secrets, so they are kept.
    fn map_error<E>(
        &self,
        err: &SdkError<E, aws_sdk_sqs::config::http::HttpResponse>,
        queue: &str,
    ) -> SourceError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let backend = BACKEND.to_string();
        match err {
            SdkError::ServiceError(ctx) => {
                let status = ctx.raw().status().as_u16();
                let code = ctx.err().code();
                let message = ctx.err().message().unwrap_or("");
                let what = match code {
                    Some(code) if message.is_empty() => code.to_string(),
                    Some(code) => format!("{code}: {message}"),
                    None if message.is_empty() => format!("HTTP {status}"),
                    None => format!("HTTP {status}: {message}"),
                };
                match classify_error(code, Some(status)) {
                    ErrorClass::NotFound => SourceError::NotFound {
                        backend,
                        what: format!("queue {queue:?}"),
                    },
                    ErrorClass::Denied => SourceError::PermissionDenied {
                        backend,
                        detail: format!("queue {queue:?}: {what}"),
                    },
                    ErrorClass::Throttled => SourceError::Unavailable {
                        backend,
                        detail: format!("queue {queue:?}: throttled ({what})"),
                    },
                    ErrorClass::BadQuery => SourceError::BadQuery {
                        backend,
                        detail: format!("queue {queue:?}: {what}"),
                    },
                    ErrorClass::Unavailable => SourceError::Unavailable {
                        backend,
                        detail: format!("queue {queue:?}: {what}"),
                    },
                }
            }
            // The SDK's own timeouts (connecting, by default) fire inside the deadline
            // `Sources::fetch` owns; they are failures to reach SQS, said as such.
            SdkError::TimeoutError(_) => SourceError::Unavailable {
                backend,
                detail: format!(
                    "queue {queue:?}: the AWS SDK timed out: {}",
                    error_chain(err)
                ),
            },
            SdkError::DispatchFailure(_) => {
                if let Some(cred) = find_source::<CredentialsError>(err) {
                    return credentials_error(cred, queue);
                }
                SourceError::Connect {
                    backend,
                    detail: format!("queue {queue:?}: {}", error_chain(err)),
                }
            }
            SdkError::ResponseError(_) => SourceError::BadResponse {
                backend,
                detail: format!("queue {queue:?}: {}", error_chain(err)),
            },
            SdkError::ConstructionFailure(_) => {
                if let Some(cred) = find_source::<CredentialsError>(err) {
                    return credentials_error(cred, queue);
                }
                SourceError::BadQuery {
                    backend,
                    detail: format!("queue {queue:?}: {}", error_chain(err)),
                }
            }
            _ => SourceError::Unavailable {
                backend,
                detail: format!("queue {queue:?}: {}", error_chain(err)),
            },
        }
    }
}

/// Caps every answer's body at [`MAX_ANSWER_BYTES`] before the SDK reads it, the hook the
/// SDK's own body-size telemetry wraps bodies in. Past the cap the read fails, and the call
/// is a [`SourceError::BadResponse`].
#[derive(Debug)]
struct AnswerLimit;

/// An answer past [`MAX_ANSWER_BYTES`].
#[derive(Debug, thiserror::Error)]
#[error("the answer is larger than {} MiB", MAX_ANSWER_BYTES >> 20)]
struct AnswerTooLarge;

impl Intercept for AnswerLimit {
    fn name(&self) -> &'static str {
        "AnswerLimit"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), aws_sdk_sqs::error::BoxError> {
        let body = std::mem::replace(context.response_mut().body_mut(), SdkBody::taken());
        *context.response_mut().body_mut() = body.map_preserve_contents(|body| {
            SdkBody::from_body_1_x(Limited::new(body, MAX_ANSWER_BYTES).map_err(
                |e| -> aws_sdk_sqs::error::BoxError {
                    if e.is::<LengthLimitError>() {
                        Box::new(AnswerTooLarge)
                    } else {
                        e
                    }
                },
            ))
        });
        Ok(())
    }
}

/// A credentials failure: none found, a role that cannot be assumed, an expired token.
fn credentials_error(err: &CredentialsError, queue: &str) -> SourceError {
    match err {
        CredentialsError::ProviderTimedOut(_) => SourceError::Unavailable {
            backend: BACKEND.to_string(),
            detail: format!(
                "queue {queue:?}: the credentials provider timed out: {}",
                error_chain(err)
            ),
        },
        _ => SourceError::PermissionDenied {
            backend: BACKEND.to_string(),
            detail: format!(
                "queue {queue:?}: no usable AWS credentials: {}",
                error_chain(err)
            ),
        },
    }
}

/// The first error of type `T` in `err`'s source chain.
fn find_source<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

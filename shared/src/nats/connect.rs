//! Connecting to NATS the same way in every service.

use async_nats::{Client, ConnectOptions, Event, ServerAddr, jetstream};

use super::NatsError;
use super::settings::{NatsConfig, NatsResourceSettings};
use super::streams::{Resources, ensure_all};

/// Connects with the service's name (visible in server reports), the configured deadlines,
/// and reconnects forever: a NATS outage must make the service unready, never make it exit.
/// Connection events are logged, so a flapping link or a slow consumer shows up in the logs.
/// The initial connect is not retried: a wrong URL at startup should fail fast.
pub async fn connect(config: &NatsConfig) -> Result<Client, NatsError> {
    crate::tls::install_crypto_provider();
    let addrs: Vec<ServerAddr> = config
        .urls()
        .iter()
        .map(|u| u.parse::<ServerAddr>())
        .collect::<Result<_, _>>()
        .map_err(|e| NatsError::Connect {
            url: config.url.clone(),
            message: format!("invalid url: {e}"),
        })?;
    if addrs.is_empty() {
        return Err(NatsError::Connect {
            url: config.url.clone(),
            message: "no server url configured".into(),
        });
    }
    let name = config.name.clone();
    auth(config)
        .await?
        .name(&config.name)
        .connection_timeout(config.connect_timeout())
        .request_timeout(Some(config.request_timeout()))
        .max_reconnects(None)
        .event_callback(move |event| {
            let name = name.clone();
            async move { log_event(&name, event) }
        })
        .connect(addrs)
        .await
        .map_err(|e| NatsError::Connect {
            url: config.url.clone(),
            message: e.to_string(),
        })
}

/// Credentials and TLS from the config. Exactly one authentication method may be set; a file
/// that cannot be read is an error naming it.
async fn auth(config: &NatsConfig) -> Result<ConnectOptions, NatsError> {
    let fail = |message: String| NatsError::Connect {
        url: config.url.clone(),
        message,
    };
    let password = password(config).map_err(fail)?;
    let methods = [
        !config.creds_file.is_empty(),
        !config.token.is_empty(),
        !config.user.is_empty() || !password.is_empty(),
    ];
    if methods.iter().filter(|m| **m).count() > 1 {
        return Err(fail(
            "set only one of NATS_CREDS_FILE, NATS_TOKEN or NATS_USER/NATS_PASSWORD".into(),
        ));
    }
    let mut options = if !config.creds_file.is_empty() {
        ConnectOptions::new()
            .credentials_file(&config.creds_file)
            .await
            .map_err(|e| fail(format!("cannot read creds file {}: {e}", config.creds_file)))?
    } else if !config.token.is_empty() {
        ConnectOptions::new().token(config.token.expose().to_owned())
    } else if !config.user.is_empty() || !password.is_empty() {
        if config.user.is_empty() || password.is_empty() {
            return Err(fail(
                "NATS_USER and NATS_PASSWORD (or NATS_PASSWORD_FILE) must be set together".into(),
            ));
        }
        crate::subjects::token("NATS_USER", &config.user)
            .map_err(|e| fail(format!("NATS_USER names the reply inboxes: {e}")))?;
        ConnectOptions::new()
            .user_and_password(config.user.clone(), password)
            .custom_inbox_prefix(inbox_prefix(&config.user))
    } else {
        ConnectOptions::new()
    };
    if config.tls_required {
        options = options.require_tls(true);
    }
    if !config.tls_ca_file.is_empty() {
        options = options.add_root_certificates(config.tls_ca_file.clone().into());
    }
    match (
        config.tls_cert_file.is_empty(),
        config.tls_key_file.is_empty(),
    ) {
        (true, true) => {}
        (false, false) => {
            options = options.add_client_certificate(
                config.tls_cert_file.clone().into(),
                config.tls_key_file.clone().into(),
            );
        }
        _ => {
            return Err(fail(
                "NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE must be set together".into(),
            ));
        }
    }
    Ok(options)
}

/// The password, from `NATS_PASSWORD` or the file `NATS_PASSWORD_FILE` names (not both).
fn password(config: &NatsConfig) -> Result<String, String> {
    if config.password_file.is_empty() {
        return Ok(config.password.expose().to_owned());
    }
    if !config.password.is_empty() {
        return Err("set NATS_PASSWORD or NATS_PASSWORD_FILE, not both".into());
    }
    let text = std::fs::read_to_string(&config.password_file)
        .map_err(|e| format!("cannot read password file {}: {e}", config.password_file))?;
    let password = text.trim();
    if password.is_empty() {
        return Err(format!("password file {} is empty", config.password_file));
    }
    Ok(password.to_owned())
}

/// Where a user's replies go: `_INBOX_<user>`, so the server can keep each user's replies to it.
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX_{user}")
}

fn log_event(name: &str, event: Event) {
    match event {
        Event::Connected => tracing::info!(connection = name, "nats connected"),
        Event::Disconnected => {
            metrics::counter!(crate::metrics::NATS_DISCONNECTS, "connection" => name.to_owned())
                .increment(1);
            tracing::warn!(connection = name, "nats disconnected, reconnecting")
        }
        Event::LameDuckMode => {
            tracing::warn!(connection = name, "nats server entering lame duck mode")
        }
        Event::SlowConsumer(sid) => {
            tracing::warn!(
                connection = name,
                sid,
                "nats slow consumer: messages dropped"
            )
        }
        other => tracing::warn!(connection = name, event = %other, "nats event"),
    }
}

/// A JetStream context whose API calls use the configured request timeout.
pub fn jetstream(client: Client, config: &NatsConfig) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(config.request_timeout())
        .build(client)
}

/// What a service holds of NATS once it has started: the connection, its JetStream context
/// and every stream and bucket.
pub struct ServiceNats {
    pub client: Client,
    pub js: jetstream::Context,
    pub resources: Resources,
}

/// The start-up step that failed, with the NATS error under it.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot connect to NATS")]
    Connect(#[source] NatsError),
    #[error("NATS streams and buckets")]
    Resources(#[source] NatsError),
}

/// How every service starts on NATS: [`connect`], a [`jetstream`] context, and
/// [`ensure_all`] the streams and buckets.
pub async fn connect_and_ensure(
    config: &NatsConfig,
    streams: &NatsResourceSettings,
) -> Result<ServiceNats, StartError> {
    let client = connect(config).await.map_err(StartError::Connect)?;
    let js = jetstream(client.clone(), config);
    let resources = ensure_all(&js, streams)
        .await
        .map_err(StartError::Resources)?;
    Ok(ServiceNats {
        client,
        js,
        resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn refused(config: NatsConfig, needle: &str) {
        let err = connect(&config).await.unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }

    #[tokio::test]
    async fn conflicting_or_incomplete_credentials_are_refused_before_connecting() {
        let base = NatsConfig {
            url: "nats://127.0.0.1:1".into(),
            ..NatsConfig::default()
        };
        refused(
            NatsConfig {
                token: "t".into(),
                user: "u".into(),
                password: "p".into(),
                ..base.clone()
            },
            "set only one of",
        )
        .await;
        refused(
            NatsConfig {
                user: "u".into(),
                ..base.clone()
            },
            "must be set together",
        )
        .await;
        refused(
            NatsConfig {
                tls_cert_file: "c.pem".into(),
                ..base.clone()
            },
            "NATS_TLS_KEY_FILE",
        )
        .await;
        refused(
            NatsConfig {
                creds_file: "/nonexistent/x.creds".into(),
                ..base
            },
            "cannot read creds file",
        )
        .await;
    }

    #[test]
    fn secrets_are_not_printed() {
        let c = NatsConfig {
            token: "s3cret".into(),
            password: "hunter2".into(),
            ..NatsConfig::default()
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"));
    }
}

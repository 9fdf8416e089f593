//! Connecting to NATS the same way in every service.

use async_nats::{Client, ConnectOptions, Event, ServerAddr, jetstream};

use super::NatsError;
use super::settings::NatsConfig;

/// Connects with the service's name (visible in server reports), the configured deadlines,
/// and reconnects forever: a NATS outage must make the service unready, never make it exit.
/// Connection events are logged, so a flapping link or a slow consumer shows up in the logs.
/// The initial connect is not retried: a wrong URL at startup should fail fast.
pub async fn connect(config: &NatsConfig) -> Result<Client, NatsError> {
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
    ConnectOptions::new()
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

fn log_event(name: &str, event: Event) {
    match event {
        Event::Connected => tracing::info!(connection = name, "nats connected"),
        Event::Disconnected => tracing::warn!(connection = name, "nats disconnected, reconnecting"),
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

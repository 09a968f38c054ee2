//! `GET /v1/gateways`: the gateways a terminal can reach its session through — the
//! coordinator's relay and every connected node's own edge gateway — each with a probe URL
//! the client times (as Coder's clients choose among workspace proxies) before it creates a
//! session, sending the round trips in `placement_hint`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, State};
use fogshell_shared::api::{GATEWAY_PROBE_PATH, GatewayKind, GatewayView, Page};
use fogshell_shared::node::NodeState;

use super::extract::{ApiQuery, WholeList};
use super::{AppState, require};
use crate::auth::{Principal, Scope};
use crate::error::ApiError;

/// The HTTP URL of a gateway's probe, from its WebSocket base URL.
fn probe_url(ws_base: &str) -> String {
    let http = if let Some(rest) = ws_base.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = ws_base.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        ws_base.to_owned()
    };
    format!("{http}{GATEWAY_PROBE_PATH}")
}

/// `GET /v1/gateways`.
pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiQuery(WholeList {}): ApiQuery<WholeList>,
) -> Result<Json<Page<GatewayView>>, ApiError> {
    require(&state.control, &principal, Scope::Sessions)?;
    let relay = state.control.relay_ws_url().to_owned();
    let mut items = vec![GatewayView {
        id: "relay".into(),
        kind: GatewayKind::Relay,
        node_id: None,
        probe_url: probe_url(&relay),
        ws_url: relay,
    }];
    items.extend(
        state
            .control
            .fleet()
            .views()
            .into_iter()
            .filter(|node| node.state == NodeState::Connected)
            .filter_map(|node| {
                let ws_url = node.gateway_url?;
                Some(GatewayView {
                    id: node.node_id.to_string(),
                    kind: GatewayKind::Node,
                    node_id: Some(node.node_id),
                    probe_url: probe_url(&ws_url),
                    ws_url,
                })
            }),
    );
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_the_gateways_http_side() {
        assert_eq!(
            probe_url("wss://fog-a.example.org:8444"),
            "https://fog-a.example.org:8444/v1/gateway/probe"
        );
        assert_eq!(
            probe_url("ws://127.0.0.1:9"),
            "http://127.0.0.1:9/v1/gateway/probe"
        );
    }
}

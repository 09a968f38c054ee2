//! `/v1/events`: the audit log, read-only, filtered and cursor-paginated.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use fogshell_shared::ErrorCode;
use fogshell_shared::api::{EventQuery, Page};
use fogshell_shared::audit::{Actor, AuditRecord};

use super::extract::{ApiQuery, cursor_position, paginate};
use super::{AppState, require};
use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::store::EventFilter;

/// Whether `principal` may read `record`: its own tenant's events; admins also read the
/// fleet's (events with no tenant) and, with a `tenant` filter, any tenant's.
fn visible(principal: &Principal, record: &AuditRecord) -> bool {
    match &record.entry.tenant {
        Some(tenant) => *tenant == principal.tenant || principal.has(Scope::Admin),
        None => principal.has(Scope::Admin),
    }
}

pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    ApiQuery(query): ApiQuery<EventQuery>,
) -> Result<Json<Page<AuditRecord>>, ApiError> {
    require(&state.control, &principal, Scope::Audit)?;
    let limit = query
        .validate()
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e))?;
    let tenant = match query.tenant {
        Some(asked) if asked != principal.tenant && !principal.has(Scope::Admin) => {
            // A refusal like any other: with its evidence.
            return Err(state.control.deny(
                Some(&principal.tenant),
                Actor::User {
                    subject: principal.subject.clone(),
                },
                ErrorCode::Forbidden,
                "audit.other_tenant",
                "only admins read other tenants' events".into(),
                Some(asked.to_string()),
            ));
        }
        Some(asked) => Some(asked),
        // Non-admins see their tenant's; admins without a filter see everything.
        None if principal.has(Scope::Admin) => None,
        None => Some(principal.tenant.clone()),
    };
    let after = cursor_position(query.cursor.as_deref())?;
    let filter = EventFilter {
        tenant,
        from: query.from,
        to: query.to,
        event_type: query.event_type,
        outcome: query.outcome,
    };
    let rows = state.control.store().events(&filter, after, limit + 1)?;
    let (items, next_cursor) = paginate(rows, limit, |record| record.seq);
    Ok(Json(Page { items, next_cursor }))
}

pub(super) async fn get_one(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<AuditRecord>, ApiError> {
    require(&state.control, &principal, Scope::Audit)?;
    match state.control.store().event(&id)? {
        Some(record) if visible(&principal, &record) => Ok(Json(record)),
        _ => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no event {id:?}"),
        )),
    }
}

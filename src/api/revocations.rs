//! The revocation list (admin key): users refused until a time, every REST username of
//! theirs included, their allocations ended at once. In a fleet the list lives in Redis
//! and every node honours it.
//!
//! - `POST /api/v1/admin/revocations?user=U&seconds=N`: revoke U for N seconds;
//! - `DELETE /api/v1/admin/revocations?user=U`: lift it;
//! - `GET /api/v1/admin/revocations`: the revocations in force on this node.

use super::admin::{admin, blocking, told};
use super::{ApiError, Params};
use crate::control::{Control, unix_now};
use crate::fleet::Fleet;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;

/// The longest revocation: ten years.
const MAX_SECONDS: u64 = 10 * 365 * 24 * 3600;

fn user(params: &Params) -> Result<String, ApiError> {
    match params.one("user")? {
        Some(u) if !u.is_empty() && u.len() <= 508 => Ok(u.to_owned()),
        _ => Err(ApiError::bad("user", "give the user (1 to 508 bytes)")),
    }
}

pub async fn revoke(
    State(control): State<Arc<Control>>,
    State(fleet): State<Option<Arc<Fleet>>>,
    headers: HeaderMap,
    params: Result<Params, ApiError>,
) -> Result<Response, ApiError> {
    admin(&control, &headers)?;
    let params = params?;
    let user = user(&params)?;
    let seconds = params
        .one("seconds")?
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| (1..=MAX_SECONDS).contains(s))
        .ok_or_else(|| ApiError::bad("seconds", "give seconds, 1 to 315360000"))?;
    let until = unix_now() + seconds;
    let name = user.clone();
    let deleted = blocking(&control, move |c| c.revoke(&name, until))
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "the revocation list is full",
            )
        })?;
    let fleet = told(fleet, "revocation", async |f| f.revoke(&user, until).await).await;
    Ok(
        Json(json!({ "user": user, "until": until, "deleted": deleted, "fleet": fleet }))
            .into_response(),
    )
}

pub async fn lift(
    State(control): State<Arc<Control>>,
    State(fleet): State<Option<Arc<Fleet>>>,
    headers: HeaderMap,
    params: Result<Params, ApiError>,
) -> Result<Response, ApiError> {
    admin(&control, &headers)?;
    let user = user(&params?)?;
    let name = user.clone();
    let lifted = blocking(&control, move |c| c.lift_revocation(&name)).await?;
    let fleet = told(fleet, "lifted revocation", async |f| {
        f.lift_revocation(&user).await
    })
    .await;
    Ok(Json(json!({ "lifted": lifted, "fleet": fleet })).into_response())
}

pub async fn list(
    State(control): State<Arc<Control>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    admin(&control, &headers)?;
    let list: Vec<_> = control
        .all_revocations()
        .into_iter()
        .map(|(user, until)| json!({ "user": user, "until": until }))
        .collect();
    Ok(Json(json!({ "revocations": list })).into_response())
}

//! Form bodies (`application/x-www-form-urlencoded`), with repeated fields kept: the volume
//! table posts one `pvc` field per selected row. Every handler that takes a body reads it
//! here: at most [`MAX_FORM_BYTES`], within [`FORM_READ_TIMEOUT`], refused with a message
//! that says so.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use std::time::Duration;

/// The largest form accepted: a pasted kubeconfig (1 MiB) percent-encoded, with room to spare.
pub const MAX_FORM_BYTES: usize = 4 << 20;
/// How long a client may take to send a form (a slow sender holds a connection meanwhile).
pub const FORM_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads a request body of at most [`MAX_FORM_BYTES`]; a refusal says why, as a response.
pub async fn read_body(body: Body) -> Result<Bytes, Response> {
    match tokio::time::timeout(
        FORM_READ_TIMEOUT,
        axum::body::to_bytes(body, MAX_FORM_BYTES),
    )
    .await
    {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "The form is larger than {} MiB, the most nkvm accepts (a pasted kubeconfig may \
                 be at most 1 MiB). Go back, shorten it and send it again.\n",
                MAX_FORM_BYTES >> 20
            ),
        )
            .into_response()),
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "The form did not arrive within {} s; send it again.\n",
                FORM_READ_TIMEOUT.as_secs()
            ),
        )
            .into_response()),
    }
}

impl<S: Send + Sync> FromRequest<S> for FormData {
    type Rejection = Response;
    async fn from_request(request: Request, _: &S) -> Result<Self, Response> {
        Ok(FormData::parse(&read_body(request.into_body()).await?))
    }
}

/// A parsed form.
#[derive(Debug, Default)]
pub struct FormData(Vec<(String, String)>);

impl FormData {
    /// Parses a urlencoded body.
    pub fn parse(body: &[u8]) -> FormData {
        FormData(form_urlencoded::parse(body).into_owned().collect())
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, trimmed, if not empty.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    }

    /// Every value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether checkbox `name` was ticked.
    pub fn checked(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_fields_are_all_kept() {
        let f = FormData::parse(b"pvc=shop%2Fdata&pvc=shop%2Flogs&parallel=+2+&csrf=x");
        assert_eq!(f.all("pvc"), ["shop/data", "shop/logs"]);
        assert_eq!(f.text("parallel").as_deref(), Some("2"));
        assert!(f.checked("csrf"));
        assert!(!f.checked("force"));
    }
}

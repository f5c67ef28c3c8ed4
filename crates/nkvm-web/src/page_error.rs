//! The one path from an error to a page: a handler returns [`PageError`] and its failure kind
//! decides the HTTP status, while the page shows the message with the navigation around it, so
//! the operator always has somewhere to go next. The "not connected" answer lives here once.

use crate::auth::CurrentUser;
use crate::layout;
use axum::response::{IntoResponse, Response};
use nkvm_domain::{FailureKind, UserError};

/// An error a page handler answers with.
#[derive(Debug)]
pub struct PageError {
    user: CurrentUser,
    title: &'static str,
    kind: FailureKind,
    message: String,
}

impl PageError {
    /// An error of `kind` on the page titled `title`.
    pub fn new(
        user: &CurrentUser,
        title: &'static str,
        kind: FailureKind,
        message: impl Into<String>,
    ) -> Self {
        PageError {
            user: user.clone(),
            title,
            kind,
            message: message.into(),
        }
    }

    /// An engine (or cluster, store, history) error, with its own kind and message.
    pub fn of(user: &CurrentUser, title: &'static str, e: &impl UserError) -> Self {
        Self::new(user, title, e.kind(), e.to_string())
    }

    /// A request the form did not fill in correctly.
    pub fn invalid(user: &CurrentUser, title: &'static str, message: impl Into<String>) -> Self {
        Self::new(user, title, FailureKind::InvalidInput, message)
    }

    /// The action needs a cluster connection and there is none.
    pub fn not_connected(user: &CurrentUser, title: &'static str) -> Self {
        Self::new(user, title, FailureKind::Conflict, NOT_CONNECTED)
    }
}

/// What every page that needs a cluster says without one.
pub const NOT_CONNECTED: &str = "Not connected to a cluster: connect on the Connection page first.";

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        layout::error_page(
            &self.user,
            crate::pages::status_for(self.kind),
            self.title,
            &self.message,
        )
    }
}

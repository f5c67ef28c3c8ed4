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
    /// A link out of the dead end: element id, target, label.
    back: Option<(&'static str, &'static str, &'static str)>,
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
            back: None,
        }
    }

    /// Adds a link back to where the operator came from (element `id`, `href`, `label`).
    pub fn with_back(mut self, id: &'static str, href: &'static str, label: &'static str) -> Self {
        self.back = Some((id, href, label));
        self
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
        let status = crate::pages::status_for(self.kind);
        let Some((id, href, label)) = self.back else {
            return layout::error_page(&self.user, status, self.title, &self.message);
        };
        let body = maud::html! {
            (layout::error_box("page-error", &self.message))
            p { a id=(id) href=(href) { (label) } }
        };
        (
            status,
            layout::page(self.title, &self.user, layout::Nav::None, body),
        )
            .into_response()
    }
}

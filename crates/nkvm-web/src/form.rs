//! Form bodies (`application/x-www-form-urlencoded`), with repeated fields kept: the volume
//! table posts one `pvc` field per selected row.

/// The largest form accepted: a pasted kubeconfig (1 MiB) percent-encoded, with room to spare.
pub const MAX_FORM_BYTES: usize = 4 << 20;

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

//! S3 keys from the AWS shared files (`~/.aws/credentials`, then `~/.aws/config`), for S3
//! entries that name no key files. The AWS SDKs look there after the environment's keys and
//! before web identity and the metadata endpoints; `object_store` reads the environment, web
//! identity and metadata but not these files, so nkvm reads them here, in the same order.
//!
//! Only static keys are read (`aws_access_key_id`, `aws_secret_access_key`,
//! `aws_session_token`). Profiles that get credentials by running a program
//! (`credential_process`), through SSO or by assuming a role are refused with a message:
//! nkvm never runs a program a configuration file names. The files are small INI files; a
//! dozen lines read them, where the AWS SDK's config crate would bring the whole SDK runtime.

use std::path::PathBuf;

/// Keys a profile holds.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ProfileKeys {
    /// Access key id.
    pub id: String,
    /// Secret access key.
    pub secret: String,
    /// Session token, for temporary keys.
    pub token: Option<String>,
    /// The file they came from (for messages; never the keys).
    pub file: PathBuf,
}

impl std::fmt::Debug for ProfileKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileKeys")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// Why a profile could not be used: the file involved and what was wrong.
#[derive(Debug)]
pub(crate) struct ProfileError {
    pub file: PathBuf,
    pub detail: String,
}

/// The keys of the selected profile (`AWS_PROFILE`, else `default`), or `None` when the
/// environment has keys of its own or no file names the profile (then the other sources
/// apply). `var` reads the environment.
pub(crate) fn keys(
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<ProfileKeys>, ProfileError> {
    if var("AWS_ACCESS_KEY_ID").is_some() {
        return Ok(None);
    }
    let explicit = var("AWS_PROFILE").filter(|p| !p.is_empty());
    let profile = explicit.clone().unwrap_or_else(|| "default".into());
    let home = var("HOME").map(PathBuf::from).unwrap_or_default();
    let credentials = var("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".aws/credentials"));
    let config = var("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".aws/config"));
    // The credentials file names sections `[NAME]`; the config file `[profile NAME]`, except
    // `[default]`.
    let config_section = if profile == "default" {
        profile.clone()
    } else {
        format!("profile {profile}")
    };
    for (file, section) in [
        (&credentials, profile.as_str()),
        (&config, config_section.as_str()),
    ] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let Some(entries) = section_entries(&text, section) else {
            continue;
        };
        let get = |k: &str| {
            entries
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        return match (get("aws_access_key_id"), get("aws_secret_access_key")) {
            (Some(id), Some(secret)) => Ok(Some(ProfileKeys {
                id,
                secret,
                token: get("aws_session_token"),
                file: file.clone(),
            })),
            _ => Err(ProfileError {
                file: file.clone(),
                detail: format!(
                    "AWS profile {profile:?} has no aws_access_key_id and aws_secret_access_key; \
                     nkvm reads static keys only (not credential_process, SSO or role_arn): \
                     put the keys in files and name them with accessKeyIdFile and \
                     secretAccessKeyFile, or use web identity"
                ),
            }),
        };
    }
    match explicit {
        Some(p) => Err(ProfileError {
            file: credentials,
            detail: format!(
                "AWS_PROFILE={p:?} but neither this file nor {} has that profile",
                config.display()
            ),
        }),
        None => Ok(None),
    }
}

/// The `key = value` lines of `[section]`, keys lower-cased; `None` without that section.
fn section_entries(text: &str, section: &str) -> Option<Vec<(String, String)>> {
    let mut current: Option<&str> = None;
    let mut found = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.trim());
            if current == Some(section) {
                found.get_or_insert_with(Vec::new);
            }
            continue;
        }
        if current != Some(section) {
            continue;
        }
        if let (Some(entries), Some((k, v))) = (found.as_mut(), line.split_once('=')) {
            let entries: &mut Vec<(String, String)> = entries;
            entries.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, String)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_selected_profile_gives_its_keys_and_the_environment_wins() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "# shared\n[default]\naws_access_key_id = AKDEFAULT\naws_secret_access_key = s1\n\n[backup]\nAWS_ACCESS_KEY_ID=AKBACKUP\naws_secret_access_key= s2 \naws_session_token = t2\n",
        )
        .unwrap();
        let path = file.display().to_string();
        let default = keys(&lookup(&[("AWS_SHARED_CREDENTIALS_FILE", path.clone())]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (default.id.as_str(), default.secret.as_str()),
            ("AKDEFAULT", "s1")
        );
        assert_eq!(default.token, None);
        let named = keys(&lookup(&[
            ("AWS_SHARED_CREDENTIALS_FILE", path.clone()),
            ("AWS_PROFILE", "backup".into()),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (named.id.as_str(), named.secret.as_str()),
            ("AKBACKUP", "s2")
        );
        assert_eq!(named.token.as_deref(), Some("t2"));
        assert!(!format!("{named:?}").contains("s2"), "Debug hides the keys");
        let env_keys = keys(&lookup(&[
            ("AWS_SHARED_CREDENTIALS_FILE", path),
            ("AWS_ACCESS_KEY_ID", "AKENV".into()),
        ]))
        .unwrap();
        assert_eq!(env_keys, None);
    }

    #[test]
    fn the_config_file_serves_profiles_the_credentials_file_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::write(
            &config,
            "[profile nas]\nregion = eu-west-1\naws_access_key_id = AKNAS\naws_secret_access_key = s3\n",
        )
        .unwrap();
        let got = keys(&lookup(&[
            ("HOME", dir.path().display().to_string()),
            ("AWS_CONFIG_FILE", config.display().to_string()),
            ("AWS_PROFILE", "nas".into()),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(got.id, "AKNAS");
        assert_eq!(got.file, config);
    }

    #[test]
    fn profiles_without_static_keys_and_missing_named_profiles_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(&file, "[sso]\ncredential_process = /bin/evil\n").unwrap();
        let path = file.display().to_string();
        let home = dir.path().display().to_string();
        let process = keys(&lookup(&[
            ("HOME", home.clone()),
            ("AWS_SHARED_CREDENTIALS_FILE", path.clone()),
            ("AWS_PROFILE", "sso".into()),
        ]))
        .unwrap_err();
        assert!(
            process.detail.contains("static keys only"),
            "{}",
            process.detail
        );
        let missing = keys(&lookup(&[
            ("HOME", home.clone()),
            ("AWS_SHARED_CREDENTIALS_FILE", path.clone()),
            ("AWS_PROFILE", "nope".into()),
        ]))
        .unwrap_err();
        assert!(
            missing.detail.contains("AWS_PROFILE=\"nope\""),
            "{}",
            missing.detail
        );
        // No profile chosen and no default section: the other sources apply.
        let none = keys(&lookup(&[
            ("HOME", home),
            ("AWS_SHARED_CREDENTIALS_FILE", path),
        ]))
        .unwrap();
        assert_eq!(none, None);
    }
}

//! Image programs: host binaries the kubelet places inside the containers of given images.
//! Containers run the host's programs, so an image is only a name here; an image program
//! makes a name mean "and this binary is at this path", as the real image would have it.
//! `nkvm sandbox`, `nkvm demo` and the tests map nkvm's own image to the nkvm binary that
//! started them, at `/usr/local/bin/nkvm`, so helper pods of that image run the agent.

use super::runtime::Bind;
use std::path::PathBuf;

/// A host binary that containers of `image` find at `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageProgram {
    /// The image reference, exactly as pods name it.
    pub image: String,
    /// The host file.
    pub program: PathBuf,
    /// Its absolute path inside the container.
    pub at: String,
}

/// The read-only binds that put `image`'s programs in place.
pub fn binds_for(image: &str, programs: &[ImageProgram]) -> Vec<Bind> {
    programs
        .iter()
        .filter(|p| p.image == image)
        .map(|p| Bind {
            source: p.program.clone(),
            dest: p.at.clone(),
            read_only: true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_image_gets_its_program() {
        let programs = vec![ImageProgram {
            image: "nkvm:1".into(),
            program: "/host/nkvm".into(),
            at: "/usr/local/bin/nkvm".into(),
        }];
        assert_eq!(binds_for("nkvm:1", &programs).len(), 1);
        assert!(binds_for("busybox", &programs).is_empty());
        assert!(binds_for("nkvm:2", &programs).is_empty());
    }
}

//! The CRI's image rules, without I/O: how a user's string names a local
//! image, which images a ListImages filter matches, what RemoveImage
//! removes (the whole image), how names move between images when one is
//! pulled, which manifest of a multi-platform index fits the host, and
//! what the image config's `User` means for ImageStatus.
//!
//! The host side keeps the records (in files) and the content; it asks
//! these functions what to do with them.

use crisp_proto::cri;

use super::reference::{AnyReference, Digest, Reference, Repository};

/// The names of one local image: what lookups, filters and removals see.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageNames {
    /// `sha256:<hex>` of the image config.
    pub id: String,
    /// Normalised `domain/path:tag` references.
    pub repo_tags: Vec<String>,
    /// Normalised `domain/path@digest` references.
    pub repo_digests: Vec<String>,
}

/// Find the image a user means by `query`, the way containerd's CRI
/// resolves it: a full ID (`sha256:…` or 64 hex digits); else a
/// reference (a tag, `:latest` when none is written, or a digest); else a
/// unique prefix of an ID's hex (what `crictl images` prints).
pub fn find(images: &[ImageNames], query: &str) -> Option<usize> {
    let query = query.trim();
    if query.is_empty() {
        return None;
    }
    match AnyReference::parse(query) {
        Ok(AnyReference::Id(d)) => {
            let id = d.to_string();
            return images.iter().position(|i| i.id == id);
        }
        Ok(AnyReference::Named(r)) => {
            if let Some(i) = find_named(images, &r) {
                return Some(i);
            }
        }
        Err(_) => {}
    }
    find_id_prefix(images, query)
}

fn find_named(images: &[ImageNames], r: &Reference) -> Option<usize> {
    let name = r.to_string();
    if r.digest().is_some() {
        images.iter().position(|i| i.repo_digests.contains(&name))
    } else {
        images.iter().position(|i| i.repo_tags.contains(&name))
    }
}

/// A unique image whose ID hex starts with `prefix` (`sha256:` optional).
fn find_id_prefix(images: &[ImageNames], prefix: &str) -> Option<usize> {
    let hex = prefix.strip_prefix("sha256:").unwrap_or(prefix);
    if hex.is_empty() || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut found = images
        .iter()
        .enumerate()
        .filter(|(_, i)| id_hex(&i.id).starts_with(hex));
    match (found.next(), found.next()) {
        (Some((idx, _)), None) => Some(idx),
        _ => None,
    }
}

fn id_hex(id: &str) -> &str {
    id.split_once(':').map_or(id, |(_, h)| h)
}

/// Which images a ListImages filter (`ImageFilter.image.image`) selects.
/// Empty: all. A repository without tag or digest (`busybox`): every
/// image with a tag or digest in that repository, which is what
/// `crictl images busybox` shows. Anything else: the image [`find`]
/// names, if any.
pub fn filter(images: &[ImageNames], query: &str) -> Vec<usize> {
    let query = query.trim();
    if query.is_empty() {
        return (0..images.len()).collect();
    }
    if !query.contains('@') && !has_tag(query) {
        if let Ok(repo) = Repository::parse_normalized(query) {
            let in_repo: Vec<usize> = images
                .iter()
                .enumerate()
                .filter(|(_, i)| {
                    i.repo_tags
                        .iter()
                        .chain(&i.repo_digests)
                        .any(|n| repository_of(n).as_ref() == Some(&repo))
                })
                .map(|(idx, _)| idx)
                .collect();
            if !in_repo.is_empty() {
                return in_repo;
            }
        }
    }
    find(images, query).into_iter().collect()
}

/// Whether the reference text names a tag (a ':' after the last '/').
fn has_tag(s: &str) -> bool {
    let tail = s.rsplit('/').next().unwrap_or(s);
    tail.contains(':')
}

fn repository_of(name: &str) -> Option<Repository> {
    Reference::parse_normalized(name)
        .ok()
        .map(|r| r.repository())
}

/// What RemoveImage does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    /// No such image: nothing to do (RemoveImage is idempotent).
    NotFound,
    /// Delete the image with all its names; its content becomes garbage
    /// unless another image shares it.
    Delete { image: usize },
}

/// Decide what removing `query` means. The CRI removes the image a name
/// finds, whatever the name: by ID, by digest or by any one of its tags,
/// the image goes with every tag and digest it has, in every repository
/// (as containerd and CRI-O do, and critest's "removing image by one tag
/// should remove all tags" checks). This is not `docker rmi`, which drops
/// only the tag it is given.
pub fn plan_removal(images: &[ImageNames], query: &str) -> Removal {
    match find(images, query) {
        Some(image) => Removal::Delete { image },
        None => Removal::NotFound,
    }
}

/// Give the image `id` the name `reference` (a tag or a digest), taking a
/// tag away from whichever other image had it: a tag names one image.
/// Digests are content-addressed, so the same digest name can only be
/// one image in practice; it is moved the same way. `images` gains an
/// entry for `id` if it has none. Returns the indices whose names
/// changed (to be written back).
pub fn assign_name(images: &mut Vec<ImageNames>, id: &str, reference: &Reference) -> Vec<usize> {
    let name = reference.to_string();
    let is_digest = reference.digest().is_some();
    let mut changed = Vec::new();
    let target = match images.iter().position(|i| i.id == id) {
        Some(t) => t,
        None => {
            images.push(ImageNames {
                id: id.to_owned(),
                ..ImageNames::default()
            });
            changed.push(images.len() - 1);
            images.len() - 1
        }
    };
    for (idx, img) in images.iter_mut().enumerate() {
        let list = if is_digest {
            &mut img.repo_digests
        } else {
            &mut img.repo_tags
        };
        if idx == target {
            if !list.contains(&name) {
                list.push(name.clone());
                list.sort();
                if !changed.contains(&idx) {
                    changed.push(idx);
                }
            }
        } else if let Some(pos) = list.iter().position(|n| *n == name) {
            list.remove(pos);
            changed.push(idx);
        }
    }
    changed.sort_unstable();
    changed
}

/// An image with neither tags nor digests left is unreachable by name:
/// crisp deletes it rather than list it as `<none>`.
pub fn is_unnamed(image: &ImageNames) -> bool {
    image.repo_tags.is_empty() && image.repo_digests.is_empty()
}

/// The user an image's config names, as ImageStatus reports it: a
/// numeric user is a uid, anything else a user name; a group after ':'
/// is not reported. Empty means unset (the runtime's default, root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageUser {
    Unset,
    Uid(i64),
    Name(String),
}

pub fn parse_user(user: &str) -> ImageUser {
    let user = user.split(':').next().unwrap_or("");
    if user.is_empty() {
        return ImageUser::Unset;
    }
    match user.parse::<i64>() {
        Ok(uid) if uid >= 0 => ImageUser::Uid(uid),
        _ => ImageUser::Name(user.to_owned()),
    }
}

/// A platform as OCI image indexes describe one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: String,
}

impl Platform {
    /// The platform of a host, from Rust's `std::env::consts::{OS, ARCH}`
    /// names mapped to OCI (Go) names.
    pub fn from_rust(os: &str, arch: &str) -> Self {
        let (architecture, variant) = match arch {
            "x86_64" => ("amd64", ""),
            "x86" => ("386", ""),
            "aarch64" => ("arm64", "v8"),
            "arm" => ("arm", "v7"),
            "powerpc64" => ("ppc64le", ""),
            "loongarch64" => ("loong64", ""),
            "mips64" => ("mips64le", ""),
            other => (other, ""),
        };
        Self {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.to_owned(),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// The manifest of an index that fits `host`: same OS and architecture,
/// and a variant the host can run (arm64's `v8` is the default; 32-bit
/// arm hosts run older variants, the newest preferred). Entries without a
/// platform (attestations, unknown/unknown) never match. Among equals the
/// first listed wins.
pub fn choose_platform(candidates: &[Option<Platform>], host: &Platform) -> Option<usize> {
    let mut best: Option<(usize, u32)> = None;
    for (idx, p) in candidates.iter().enumerate() {
        let Some(p) = p else { continue };
        if p.os != host.os || normalize_arch(&p.architecture) != normalize_arch(&host.architecture)
        {
            continue;
        }
        let Some(rank) = variant_rank(
            &normalize_arch(&host.architecture),
            &p.variant,
            &host.variant,
        ) else {
            continue;
        };
        if best.is_none_or(|(_, r)| rank > r) {
            best = Some((idx, rank));
        }
    }
    best.map(|(idx, _)| idx)
}

fn normalize_arch(arch: &str) -> String {
    match arch {
        "x86_64" | "x86-64" => "amd64".into(),
        "aarch64" => "arm64".into(),
        "i386" => "386".into(),
        other => other.to_owned(),
    }
}

/// How well an image `variant` suits a host `want`ing a variant: `None`
/// if it cannot run, higher is better.
fn variant_rank(arch: &str, variant: &str, want: &str) -> Option<u32> {
    let v = |s: &str| -> Option<u32> { s.strip_prefix('v').and_then(|n| n.parse().ok()) };
    match arch {
        "arm64" => {
            let variant = if variant.is_empty() { "v8" } else { variant };
            let want = if want.is_empty() { "v8" } else { want };
            match (v(variant), v(want)) {
                (Some(a), Some(b)) if a <= b => Some(100 + a),
                _ if variant == want => Some(100),
                _ => None,
            }
        }
        "arm" => {
            let want = v(if want.is_empty() { "v7" } else { want })?;
            match v(variant) {
                Some(a) if a <= want => Some(100 + a),
                None if variant.is_empty() => Some(1),
                _ => None,
            }
        }
        _ => {
            if variant == want {
                Some(2)
            } else if variant.is_empty() || want.is_empty() {
                Some(1)
            } else {
                None
            }
        }
    }
}

/// How ContainerStatus names the image a container runs, as containerd's
/// CRI fills it: `image` a tag of the image (kubelet shows it as the
/// container's image) and `image_ref` a repo digest (kubelet's `imageID`
/// of the container), while `image_id` stays the image ID. `requested`
/// is what the user asked for (`ImageSpec.user_specified_image`, else
/// `ImageSpec.image`): a tag or digest in its repository is preferred, so
/// that an image pulled from two registries shows the one the pod named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerImage {
    /// A tag of the image; `None`: it has none, keep the request's spec.
    pub tag: Option<String>,
    /// A repo digest of the image, else its ID.
    pub image_ref: String,
}

pub fn container_image(image: &ImageNames, requested: &str) -> ContainerImage {
    let requested = match AnyReference::parse(requested.trim()) {
        Ok(AnyReference::Named(r)) => Some(r),
        _ => None,
    };
    let repo = requested.as_ref().map(Reference::repository);
    let in_repo = |name: &&String| repo.is_some() && repository_of(name) == repo;
    let exact = requested
        .as_ref()
        .map(Reference::to_string)
        .filter(|r| image.repo_tags.contains(r));
    let tag = exact
        .or_else(|| image.repo_tags.iter().find(in_repo).cloned())
        .or_else(|| image.repo_tags.first().cloned());
    let image_ref = image
        .repo_digests
        .iter()
        .find(in_repo)
        .or_else(|| image.repo_digests.first())
        .cloned()
        .unwrap_or_else(|| image.id.clone());
    ContainerImage { tag, image_ref }
}

/// Name the image of a ContainerStatus after `image`, the local image
/// whose ID the status carries (see [`container_image`]): `image.image`
/// becomes a tag (the rest of the spec stays as requested), `image_ref` a
/// repo digest. `image_id` is left as it is.
pub fn fill_container_status(status: &mut cri::ContainerStatus, image: &ImageNames) {
    let spec = status.image.get_or_insert_with(cri::ImageSpec::default);
    let requested = if spec.user_specified_image.is_empty() {
        &spec.image
    } else {
        &spec.user_specified_image
    };
    let named = container_image(image, requested);
    if let Some(tag) = named.tag {
        spec.image = tag;
    }
    status.image_ref = named.image_ref;
}

/// The repo digest for `reference`'s repository and the manifest (or
/// index) digest the registry served it as.
pub fn repo_digest(reference: &Reference, digest: &Digest) -> String {
    Reference::with_digest(&reference.repository(), digest.clone()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaa000000000000000000000000000000000000000000000000000000000000";
    const B: &str = "sha256:bbbb000000000000000000000000000000000000000000000000000000000000";
    const M: &str = "sha256:1111000000000000000000000000000000000000000000000000000000000000";

    fn sample() -> Vec<ImageNames> {
        vec![
            ImageNames {
                id: A.into(),
                repo_tags: vec![
                    "docker.io/library/busybox:1.36".into(),
                    "docker.io/library/busybox:latest".into(),
                ],
                repo_digests: vec![format!("docker.io/library/busybox@{M}")],
            },
            ImageNames {
                id: B.into(),
                repo_tags: vec!["quay.io/app/web:v1".into()],
                repo_digests: vec![],
            },
        ]
    }

    #[test]
    fn find_by_every_name() {
        let imgs = sample();
        assert_eq!(find(&imgs, "busybox"), Some(0));
        assert_eq!(find(&imgs, "busybox:1.36"), Some(0));
        assert_eq!(find(&imgs, "docker.io/library/busybox:latest"), Some(0));
        assert_eq!(find(&imgs, &format!("busybox@{M}")), Some(0));
        assert_eq!(find(&imgs, A), Some(0));
        assert_eq!(find(&imgs, &A[7..]), Some(0));
        assert_eq!(find(&imgs, "bbbb"), Some(1));
        assert_eq!(find(&imgs, "sha256:bbbb"), Some(1));
        assert_eq!(find(&imgs, "quay.io/app/web:v1"), Some(1));
        assert_eq!(find(&imgs, "quay.io/app/web"), None);
        assert_eq!(find(&imgs, "busybox:2"), None);
        assert_eq!(find(&imgs, ""), None);
        assert_eq!(find(&imgs, "NOT A REF"), None);
    }

    #[test]
    fn ambiguous_id_prefix_finds_nothing() {
        let mut imgs = sample();
        imgs[1].id =
            "sha256:aaab000000000000000000000000000000000000000000000000000000000000".into();
        assert_eq!(find(&imgs, "aaa"), None);
        assert_eq!(find(&imgs, "aaab"), Some(1));
    }

    #[test]
    fn filters() {
        let imgs = sample();
        assert_eq!(filter(&imgs, ""), vec![0, 1]);
        assert_eq!(filter(&imgs, "busybox"), vec![0]);
        assert_eq!(filter(&imgs, "busybox:1.36"), vec![0]);
        assert_eq!(filter(&imgs, "quay.io/app/web"), vec![1]);
        assert_eq!(filter(&imgs, "bbbb"), vec![1]);
        assert_eq!(filter(&imgs, "nginx"), Vec::<usize>::new());
        assert_eq!(filter(&imgs, "busybox:9"), Vec::<usize>::new());
    }

    #[test]
    fn removal_by_any_name_deletes_the_whole_image() {
        let mut imgs = sample();
        // The same content pulled from a second registry: one image.
        imgs[0]
            .repo_tags
            .push("registry.k8s.io/busybox:1.36".into());
        imgs[0]
            .repo_digests
            .push(format!("registry.k8s.io/busybox@{M}"));
        for name in [
            "busybox:1.36",
            "docker.io/library/busybox:latest",
            "registry.k8s.io/busybox:1.36",
            &format!("busybox@{M}"),
            &format!("registry.k8s.io/busybox@{M}"),
            A,
            &A[7..20],
        ] {
            assert_eq!(
                plan_removal(&imgs, name),
                Removal::Delete { image: 0 },
                "{name}"
            );
        }
        assert_eq!(
            plan_removal(&imgs, "quay.io/app/web:v1"),
            Removal::Delete { image: 1 }
        );
        assert_eq!(plan_removal(&imgs, "nginx"), Removal::NotFound);
        assert_eq!(plan_removal(&imgs, "busybox:2"), Removal::NotFound);
        assert_eq!(plan_removal(&imgs, ""), Removal::NotFound);
    }

    #[test]
    fn tags_move_between_images() {
        let mut imgs = sample();
        let r = Reference::parse_normalized("busybox:latest").unwrap();
        let changed = assign_name(&mut imgs, B, &r);
        assert_eq!(changed, vec![0, 1]);
        assert_eq!(
            imgs[0].repo_tags,
            vec!["docker.io/library/busybox:1.36".to_string()]
        );
        assert!(imgs[1]
            .repo_tags
            .contains(&"docker.io/library/busybox:latest".to_string()));
        // Idempotent.
        assert!(assign_name(&mut imgs, B, &r).is_empty());
        // A new image.
        let c = "sha256:cccc000000000000000000000000000000000000000000000000000000000000";
        let changed = assign_name(&mut imgs, c, &Reference::parse_normalized("x:1").unwrap());
        assert_eq!(changed, vec![2]);
        assert_eq!(imgs[2].repo_tags, vec!["docker.io/library/x:1".to_string()]);
        let d = Reference::parse_normalized(&format!("x@{M}")).unwrap();
        assign_name(&mut imgs, c, &d);
        assert_eq!(
            imgs[2].repo_digests,
            vec![format!("docker.io/library/x@{M}")]
        );
        assert!(!is_unnamed(&imgs[2]));
    }

    #[test]
    fn users() {
        assert_eq!(parse_user(""), ImageUser::Unset);
        assert_eq!(parse_user("0"), ImageUser::Uid(0));
        assert_eq!(parse_user("1000:1000"), ImageUser::Uid(1000));
        assert_eq!(parse_user("nobody"), ImageUser::Name("nobody".into()));
        assert_eq!(
            parse_user("www-data:www-data"),
            ImageUser::Name("www-data".into())
        );
        assert_eq!(parse_user(":100"), ImageUser::Unset);
    }

    fn p(os: &str, arch: &str, variant: &str) -> Option<Platform> {
        Some(Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.into(),
        })
    }

    #[test]
    fn platform_choice() {
        let idx = vec![
            p("linux", "arm", "v6"),
            p("linux", "arm", "v7"),
            p("linux", "arm64", "v8"),
            None,
            p("unknown", "unknown", ""),
            p("linux", "amd64", ""),
            p("windows", "amd64", ""),
        ];
        let amd64 = Platform::from_rust("linux", "x86_64");
        assert_eq!(choose_platform(&idx, &amd64), Some(5));
        let arm64 = Platform::from_rust("linux", "aarch64");
        assert_eq!(choose_platform(&idx, &arm64), Some(2));
        let armv7 = Platform::from_rust("linux", "arm");
        assert_eq!(choose_platform(&idx, &armv7), Some(1));
        let armv6 = Platform {
            variant: "v6".into(),
            ..armv7.clone()
        };
        assert_eq!(choose_platform(&idx, &armv6), Some(0));
        let s390 = Platform::from_rust("linux", "s390x");
        assert_eq!(choose_platform(&idx, &s390), None);
        // arm64 without a variant is v8.
        assert_eq!(choose_platform(&[p("linux", "arm64", "")], &arm64), Some(0));
        assert_eq!(amd64.to_string(), "linux/amd64");
        assert_eq!(arm64.to_string(), "linux/arm64/v8");
    }

    #[test]
    fn container_image_prefers_the_requested_repository() {
        let mut img = sample().remove(0);
        img.repo_tags.push("registry.k8s.io/busybox:1.36".into());
        img.repo_tags.sort();
        img.repo_digests
            .push(format!("registry.k8s.io/busybox@{M}"));
        let docker_digest = format!("docker.io/library/busybox@{M}");
        let k8s_digest = format!("registry.k8s.io/busybox@{M}");
        let got = |requested: &str| container_image(&img, requested);
        // The exact tag asked for.
        assert_eq!(
            got("busybox:latest"),
            ContainerImage {
                tag: Some("docker.io/library/busybox:latest".into()),
                image_ref: docker_digest.clone(),
            }
        );
        assert_eq!(
            got("registry.k8s.io/busybox:1.36"),
            ContainerImage {
                tag: Some("registry.k8s.io/busybox:1.36".into()),
                image_ref: k8s_digest.clone(),
            }
        );
        // A digest: a tag of its repository.
        assert_eq!(
            got(&k8s_digest),
            ContainerImage {
                tag: Some("registry.k8s.io/busybox:1.36".into()),
                image_ref: k8s_digest.clone(),
            }
        );
        // The ID (what kubelet passes) or a tag the image lost: the first
        // of each.
        let first = ContainerImage {
            tag: Some("docker.io/library/busybox:1.36".into()),
            image_ref: docker_digest.clone(),
        };
        assert_eq!(got(A), first);
        assert_eq!(got(""), first);
        assert_eq!(got("quay.io/other:1"), first);
        // No names at all: no tag, and the ID as the reference.
        let bare = ImageNames {
            id: B.into(),
            ..ImageNames::default()
        };
        assert_eq!(
            container_image(&bare, "quay.io/app/web:v1"),
            ContainerImage {
                tag: None,
                image_ref: B.into(),
            }
        );
    }

    #[test]
    fn container_status_names() {
        let img = sample().remove(0);
        let mut st = cri::ContainerStatus {
            image: Some(cri::ImageSpec {
                image: A.into(),
                user_specified_image: "busybox:latest".into(),
                runtime_handler: "h".into(),
                ..cri::ImageSpec::default()
            }),
            image_ref: A.into(),
            image_id: A.into(),
            ..cri::ContainerStatus::default()
        };
        fill_container_status(&mut st, &img);
        let spec = st.image.as_ref().unwrap();
        assert_eq!(spec.image, "docker.io/library/busybox:latest");
        assert_eq!(spec.user_specified_image, "busybox:latest");
        assert_eq!(spec.runtime_handler, "h");
        assert_eq!(st.image_ref, format!("docker.io/library/busybox@{M}"));
        assert_eq!(st.image_id, A);
    }

    #[test]
    fn repo_digests() {
        let r = Reference::parse_normalized("busybox:1").unwrap();
        let d = Digest::parse(M).unwrap();
        assert_eq!(
            repo_digest(&r, &d),
            format!("docker.io/library/busybox@{M}")
        );
    }
}

//! Image commands: `images`, `pull`, `rmi`, `inspecti`.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use peapod_cri_proto::v1;
use serde::Serialize;

use super::info_value;
use crate::client::{rpc_error, Cri};
use crate::output::{self, human_size, Format, Table};

/// How an image is printed as JSON or YAML.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageView {
    id: String,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
    size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<i64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    username: String,
    pinned: bool,
}

impl From<&v1::Image> for ImageView {
    fn from(image: &v1::Image) -> Self {
        ImageView {
            id: image.id.clone(),
            repo_tags: image.repo_tags.clone(),
            repo_digests: image.repo_digests.clone(),
            size: image.size,
            uid: image.uid.as_ref().map(|u| u.value),
            username: image.username.clone(),
            pinned: image.pinned,
        }
    }
}

fn spec(image: &str) -> Option<v1::ImageSpec> {
    Some(v1::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

/// `sha256:0123…` → `0123456789ab` (the 12 hex digits people recognise).
pub fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

/// `registry/repo:tag` → (`registry/repo`, `tag`); a port is not a tag.
fn split_tag(name: &str) -> (&str, &str) {
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (name, "<none>"),
    }
}

/// The (repository, tag) lines an image gets in a table: one per tag; an image known only by
/// digest, or not named at all, still gets a line.
pub fn table_names<'a>(
    repo_tags: &'a [String],
    repo_digests: &'a [String],
) -> Vec<(&'a str, &'a str)> {
    let mut names: Vec<(&str, &str)> = repo_tags.iter().map(|t| split_tag(t)).collect();
    if names.is_empty() {
        names = repo_digests
            .iter()
            .map(|d| (d.split_once('@').map_or(d.as_str(), |(n, _)| n), "<none>"))
            .collect();
    }
    if names.is_empty() {
        names.push(("<none>", "<none>"));
    }
    names
}

async fn list(cri: &mut Cri, filter: Option<&str>) -> anyhow::Result<Vec<v1::Image>> {
    let request = v1::ListImagesRequest {
        filter: filter.map(|image| v1::ImageFilter { image: spec(image) }),
    };
    let mut images = cri
        .images
        .list_images(request)
        .await
        .map_err(|s| rpc_error("ListImages", s))?
        .into_inner()
        .images;
    images.sort_by(|a, b| a.repo_tags.cmp(&b.repo_tags).then(a.id.cmp(&b.id)));
    Ok(images)
}

/// Finds the image `name` refers to: a reference or ID the daemon knows, or
/// else a unique prefix of an image ID. Returns what to send the daemon to
/// mean exactly that image (the name itself, so `rmi name:tag` only removes
/// the tag, or the full ID for a prefix) and the image.
async fn resolve(cri: &mut Cri, name: &str) -> anyhow::Result<(String, v1::Image)> {
    let status = cri
        .images
        .image_status(v1::ImageStatusRequest {
            image: spec(name),
            verbose: false,
        })
        .await
        .map_err(|s| rpc_error("ImageStatus", s))?
        .into_inner();
    if let Some(image) = status.image {
        return Ok((name.to_string(), image));
    }
    let prefix = name.strip_prefix("sha256:").unwrap_or(name);
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("no such image: {name}");
    }
    let mut matches: Vec<v1::Image> = list(cri, None)
        .await?
        .into_iter()
        .filter(|i| {
            i.id.strip_prefix("sha256:")
                .unwrap_or(&i.id)
                .starts_with(prefix)
        })
        .collect();
    match matches.len() {
        0 => bail!("no such image: {name}"),
        1 => {
            let image = matches.remove(0);
            Ok((image.id.clone(), image))
        }
        n => bail!("image ID prefix {name:?} is ambiguous: it matches {n} images"),
    }
}

pub async fn images(
    cri: &mut Cri,
    filter: Option<&str>,
    quiet: bool,
    format: Format,
) -> anyhow::Result<()> {
    let images = list(cri, filter).await?;
    if quiet {
        for image in &images {
            println!("{}", image.id);
        }
        return Ok(());
    }
    if format != Format::Table {
        let views: Vec<ImageView> = images.iter().map(ImageView::from).collect();
        return output::structured(&BTreeMap::from([("images", views)]), format);
    }
    let mut table = Table::new(&["IMAGE", "TAG", "IMAGE ID", "SIZE"]);
    for image in &images {
        let (id, size) = (short_id(&image.id).to_string(), human_size(image.size));
        for (repo, tag) in table_names(&image.repo_tags, &image.repo_digests) {
            table.row(vec![repo.into(), tag.into(), id.clone(), size.clone()]);
        }
    }
    print!("{}", table.render());
    Ok(())
}

pub async fn pull(cri: &mut Cri, image: &str, creds: Option<&str>) -> anyhow::Result<()> {
    let auth = match creds {
        Some(creds) => {
            let (username, password) = creds
                .split_once(':')
                .context("--creds must be USER:PASSWORD")?;
            Some(v1::AuthConfig {
                username: username.into(),
                password: password.into(),
                ..Default::default()
            })
        }
        None => None,
    };
    let response = cri
        .images
        .pull_image(v1::PullImageRequest {
            image: spec(image),
            auth,
            sandbox_config: None,
        })
        .await
        .map_err(|s| rpc_error("PullImage", s))?
        .into_inner();
    println!("Image is up to date for {}", response.image_ref);
    Ok(())
}

/// Removes each image; carries on past failures and reports them all.
pub async fn rmi(cri: &mut Cri, names: &[String]) -> anyhow::Result<()> {
    let mut failed = 0;
    for name in names {
        let removed = async {
            let (target, _) = resolve(cri, name).await?;
            cri.images
                .remove_image(v1::RemoveImageRequest {
                    image: spec(&target),
                })
                .await
                .map_err(|s| rpc_error("RemoveImage", s))?;
            anyhow::Ok(())
        }
        .await;
        match removed {
            Ok(()) => println!("Deleted: {name}"),
            Err(e) => {
                eprintln!("peapod: removing {name}: {e:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} image(s) could not be removed", names.len());
    }
    Ok(())
}

/// The image's status and, parsed, the daemon's verbose details (its config).
pub async fn inspecti(cri: &mut Cri, name: &str, format: Format) -> anyhow::Result<()> {
    let (target, _) = resolve(cri, name).await?;
    let response = cri
        .images
        .image_status(v1::ImageStatusRequest {
            image: spec(&target),
            verbose: true,
        })
        .await
        .map_err(|s| rpc_error("ImageStatus", s))?
        .into_inner();
    let Some(image) = response.image else {
        // Removed between the two calls.
        bail!("no such image: {name}");
    };
    let info: BTreeMap<String, serde_json::Value> = response
        .info
        .iter()
        .map(|(k, v)| (k.clone(), info_value(v)))
        .collect();
    let document = serde_json::json!({
        "status": ImageView::from(&image),
        "info": info,
    });
    output::structured(&document, format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_ids() {
        assert_eq!(
            split_tag("docker.io/library/busybox:1.36"),
            ("docker.io/library/busybox", "1.36")
        );
        assert_eq!(
            split_tag("127.0.0.1:5000/test/multi"),
            ("127.0.0.1:5000/test/multi", "<none>")
        );
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("abc"), "abc");
    }
}

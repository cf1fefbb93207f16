//! Palette pack archives for bundles: a deterministic `<name>-<version>.tar.gz`
//! holding `<name>/pack.json`, `<name>/values.yaml` and, optionally, a chart
//! under `<name>/charts/`, added to a bundle with
//! `BundleBuilder::file(&pack.bundle_path(), &pack.archive())`.

use std::io::Write;

/// A pack to build.
#[derive(Debug, Clone)]
pub struct PackFixture {
    /// `pack.json` `name`.
    pub name: String,
    /// `pack.json` `version`.
    pub version: String,
    /// `pack.json` `layer`.
    pub layer: String,
    /// `pack.json` `cloudTypes`.
    pub cloud_types: Vec<String>,
    /// `pack.json` `annotations.architecture` (comma-joined), if any.
    pub architecture: Option<String>,
    /// `pack.json` `annotations.fips`, if any.
    pub fips: Option<bool>,
    /// Images under `pack.content.images[].image` in `values.yaml`.
    pub images: Vec<String>,
    /// A chart archive to put under `charts/`, as (file name, bytes).
    pub chart: Option<(String, Vec<u8>)>,
    /// Replaces the generated `pack.json` (e.g. one missing its name).
    pub pack_json: Option<String>,
    /// Leave `pack.json` out.
    pub without_pack_json: bool,
}

impl PackFixture {
    /// An addon pack for all clouds on amd64, declaring no images.
    pub fn new(name: &str, version: &str) -> PackFixture {
        PackFixture {
            name: name.to_owned(),
            version: version.to_owned(),
            layer: "addon".to_owned(),
            cloud_types: vec!["all".to_owned()],
            architecture: Some("amd64".to_owned()),
            fips: None,
            images: Vec::new(),
            chart: None,
            pack_json: None,
            without_pack_json: false,
        }
    }

    /// Sets the layer.
    pub fn layer(mut self, layer: &str) -> PackFixture {
        self.layer = layer.to_owned();
        self
    }

    /// Sets the cloud types.
    pub fn cloud_types(mut self, types: &[&str]) -> PackFixture {
        self.cloud_types = types.iter().map(|t| (*t).to_owned()).collect();
        self
    }

    /// Sets `annotations.architecture`.
    pub fn architecture(mut self, architecture: &str) -> PackFixture {
        self.architecture = Some(architecture.to_owned());
        self
    }

    /// Sets `annotations.fips`.
    pub fn fips(mut self, fips: bool) -> PackFixture {
        self.fips = Some(fips);
        self
    }

    /// Declares an image in `values.yaml`.
    pub fn image(mut self, image: &str) -> PackFixture {
        self.images.push(image.to_owned());
        self
    }

    /// Adds a chart archive under `charts/`.
    pub fn chart(mut self, file_name: &str, bytes: &[u8]) -> PackFixture {
        self.chart = Some((file_name.to_owned(), bytes.to_vec()));
        self
    }

    /// Uses this text as `pack.json`.
    pub fn raw_pack_json(mut self, text: &str) -> PackFixture {
        self.pack_json = Some(text.to_owned());
        self
    }

    /// Leaves `pack.json` out of the archive.
    pub fn without_pack_json(mut self) -> PackFixture {
        self.without_pack_json = true;
        self
    }

    /// The archive's file name: `<name>-<version>.tar.gz`.
    pub fn file_name(&self) -> String {
        format!("{}-{}.tar.gz", self.name, self.version)
    }

    /// Where it sits in a bundle: `packs/<name>-<version>.tar.gz`.
    pub fn bundle_path(&self) -> String {
        format!("packs/{}", self.file_name())
    }

    /// The `pack.json` text.
    pub fn pack_json_text(&self) -> String {
        if let Some(text) = &self.pack_json {
            return text.clone();
        }
        let mut annotations = serde_json::Map::new();
        if let Some(architecture) = &self.architecture {
            annotations.insert("architecture".into(), architecture.clone().into());
        }
        if let Some(fips) = self.fips {
            annotations.insert("fips".into(), fips.to_string().into());
        }
        let json = serde_json::json!({
            "name": self.name,
            "displayName": format!("{} pack", self.name),
            "version": self.version,
            "layer": self.layer,
            "addonType": "system app",
            "cloudTypes": self.cloud_types,
            "annotations": annotations,
        });
        serde_json::to_string_pretty(&json).expect("pack.json")
    }

    /// The `values.yaml` text.
    pub fn values_yaml(&self) -> String {
        let mut text = format!(
            "pack:\n  namespace: {}\n  content:\n    images:\n",
            self.name
        );
        if self.images.is_empty() {
            text = format!("pack:\n  namespace: {}\n", self.name);
        }
        for image in &self.images {
            text.push_str(&format!("      - image: {image}\n"));
        }
        text.push_str("replicas: 1\n");
        text
    }

    /// The deterministic `.tar.gz` (fixed mtimes, owners and modes).
    pub fn archive(&self) -> Vec<u8> {
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        if !self.without_pack_json {
            files.push((
                format!("{}/pack.json", self.name),
                self.pack_json_text().into_bytes(),
            ));
        }
        files.push((
            format!("{}/values.yaml", self.name),
            self.values_yaml().into_bytes(),
        ));
        files.push((
            format!("{}/README.md", self.name),
            format!("# {}\n", self.name).into_bytes(),
        ));
        if let Some((file_name, bytes)) = &self.chart {
            files.push((format!("{}/charts/{file_name}", self.name), bytes.clone()));
        }
        gzip_tar(&files)
    }
}

/// A deterministic gzip-compressed tar of `files`.
pub fn gzip_tar(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, body) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        tar.append_data(&mut header, path, &body[..])
            .expect("append to the pack tar");
    }
    let tar = tar.into_inner().expect("finish the pack tar");
    let mut gzip = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    gzip.write_all(&tar).expect("gzip the pack");
    gzip.finish().expect("finish the gzip")
}

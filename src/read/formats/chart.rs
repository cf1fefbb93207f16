//! Helm chart archives become Helm OCI charts, the way `helm push` makes
//! them, so `helm pull oci://<host>/<prefix>/charts/<name> --version V` works.
//!
//! Charts come loose (`charts/<chart>.tgz`) or inside packs
//! (`packs/<pack>.tar.gz` members `charts/*.tgz` or `<dir>/charts/*.tgz`).
//! The archive itself is the one layer, byte for byte; the config is the
//! chart's metadata as helm serialises it (`chart.Metadata` through Go's
//! `encoding/json`), so the config and layer digests equal those of
//! `helm push`. The manifest carries helm's annotations except
//! `org.opencontainers.image.created`, which would make every import of the
//! same bundle write a new manifest.
//!
//! A provenance file beside a loose chart (`<chart>.tgz.prov`, from
//! `helm package --sign`) becomes the second layer, as `helm push` adds it,
//! so `helm pull --verify` works against the target.
//!
//! The same chart found twice (loose and in a pack) is pushed once; two
//! different archives claiming the same name and version are an error naming
//! both. Pack archives themselves are left to the packs format.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

use bytes::Bytes;
use serde::Serialize;
use serde_yaml_ng::Value;

use crate::digest::Digest;
use crate::read::artifact::{
    Assembly, TITLE_ANNOTATION, VERSION_ANNOTATION, Written, WrittenManifest,
};
use crate::read::image::BundleImage;
use crate::read::names::{Area, ArtifactName, is_path_component, version_tag};
use crate::read::peek::{GZIP_MAGIC, Peek, ScannedFile};
use crate::read::{ReadLimits, Result, invalid};

/// Where the bundle holds loose chart archives.
pub const CHARTS_PREFIX: &str = "charts/";

/// Where the bundle holds pack archives, which may carry charts.
pub const PACKS_PREFIX: &str = "packs/";

/// The config media type of a Helm OCI chart.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.helm.config.v1+json";

/// The layer media type of a Helm OCI chart (the packaged `.tgz`).
pub const CHART_MEDIA_TYPE: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

/// The layer media type of a chart's provenance file (`<chart>.tgz.prov`,
/// written by `helm package --sign`), which `helm push` adds when present.
pub const PROVENANCE_MEDIA_TYPE: &str = "application/vnd.cncf.helm.chart.provenance.v1.prov";

/// The suffix of a chart's provenance file beside it.
pub const PROVENANCE_SUFFIX: &str = ".prov";

const DESCRIPTION_ANNOTATION: &str = "org.opencontainers.image.description";
const URL_ANNOTATION: &str = "org.opencontainers.image.url";
const SOURCE_ANNOTATION: &str = "org.opencontainers.image.source";
const AUTHORS_ANNOTATION: &str = "org.opencontainers.image.authors";

/// The chart API version helm assumes when `Chart.yaml` names none.
const DEFAULT_API_VERSION: &str = "v1";

/// How many bytes of a chart inside a pack are decompressed while looking
/// for its `Chart.yaml`: charts are small, and a gzip bomb must not keep the
/// import busy for long.
const MAX_EXPANDED_CHART_BYTES: u64 = 256 << 20;

/// Turns every chart archive of the bundle into a Helm OCI chart. Returns the
/// images and the paths of the loose chart files it used (pack archives are
/// claimed by the packs format).
pub fn collect(
    bundle: &str,
    files: &[ScannedFile],
    limits: ReadLimits,
    assembly: &mut Assembly,
) -> Result<(Vec<BundleImage>, Vec<String>)> {
    let mut charts = Charts::default();
    let mut used = Vec::new();
    let provenance: HashMap<&str, &ScannedFile> = files
        .iter()
        .filter_map(|f| {
            f.file
                .path
                .strip_suffix(PROVENANCE_SUFFIX)
                .filter(|chart| is_chart_path(chart))
                .map(|chart| (chart, f))
        })
        .collect();
    for file in files.iter().filter(|f| is_chart_path(&f.file.path)) {
        let item = file.file.path.clone();
        let chart_yaml = loose_chart_yaml(bundle, file)?;
        let metadata = Metadata::parse(&chart_yaml).map_err(|r| invalid(bundle, &item, r))?;
        let mut layers = vec![Written::new(CHART_MEDIA_TYPE, assembly.file_blob(file))];
        if let Some(prov) = provenance.get(file.file.path.as_str()) {
            layers.push(Written::new(
                PROVENANCE_MEDIA_TYPE,
                assembly.file_blob(prov),
            ));
            used.push(prov.file.path.clone());
        }
        charts.add(bundle, item, metadata, layers, assembly)?;
        used.push(file.file.path.clone());
    }
    for pack in files
        .iter()
        .filter(|f| f.file.path.starts_with(PACKS_PREFIX))
    {
        for member in pack.members().iter().filter(|m| is_pack_chart(&m.path)) {
            let item = format!("{}: {}", pack.file.path, member.path);
            let chart_yaml =
                packed_chart_yaml(&member.bytes, limits).map_err(|r| invalid(bundle, &item, r))?;
            let metadata = Metadata::parse(&chart_yaml).map_err(|r| invalid(bundle, &item, r))?;
            let layer = Written::new(CHART_MEDIA_TYPE, assembly.memory_blob(member.bytes.clone()));
            charts.add(bundle, item, metadata, vec![layer], assembly)?;
        }
    }
    Ok((charts.images, used))
}

/// The charts collected so far, by where they land.
#[derive(Default)]
struct Charts {
    images: Vec<BundleImage>,
    /// For each name: the chart archive's digest and the item that claimed
    /// it. The same archive found again (in a pack, without the provenance
    /// file beside the loose one) is the same chart.
    claimed: HashMap<ArtifactName, (Digest, String)>,
}

impl Charts {
    fn add(
        &mut self,
        bundle: &str,
        item: String,
        metadata: Metadata,
        layers: Vec<Written>,
        assembly: &mut Assembly,
    ) -> Result<()> {
        if !is_path_component(&metadata.name) {
            return Err(invalid(
                bundle,
                &item,
                format!(
                    "chart name {:?} is not a valid repository name \
                     (lowercase letters, digits and . _ - inside)",
                    metadata.name
                ),
            ));
        }
        let tag = version_tag(&metadata.version).ok_or_else(|| {
            invalid(
                bundle,
                &item,
                format!(
                    "chart version {:?} cannot be a registry tag",
                    metadata.version
                ),
            )
        })?;
        let name = ArtifactName::in_area(Area::Charts, &metadata.name, &tag);
        let archive = layers.first().map(|l| l.digest.clone());
        match (self.claimed.get(&name), &archive) {
            (Some((digest, _)), Some(archive)) if digest == archive => return Ok(()),
            (Some((_, first)), _) => {
                return Err(invalid(
                    bundle,
                    &item,
                    format!("it claims {name}, which {first} already claims with other content"),
                ));
            }
            _ => {}
        }
        let config = Written::new(
            CONFIG_MEDIA_TYPE,
            assembly.memory_blob(metadata.config_json()),
        );
        let mut manifest = WrittenManifest::oci(config, layers);
        manifest.annotations = metadata.annotations_for_manifest();
        if let Some(archive) = archive {
            self.claimed.insert(name.clone(), (archive, item));
        }
        self.images
            .push(assembly.artifact(name, &manifest, CONFIG_MEDIA_TYPE));
        Ok(())
    }
}

/// Whether a path is a loose chart archive.
fn is_chart_path(path: &str) -> bool {
    path.starts_with(CHARTS_PREFIX) && (path.ends_with(".tgz") || path.ends_with(".tar.gz"))
}

/// Whether a member kept from a pack is a chart (`charts/x.tgz`,
/// `<dir>/charts/x.tgz`).
fn is_pack_chart(path: &str) -> bool {
    path.ends_with(".tgz")
        && matches!(
            path.split('/').collect::<Vec<_>>().as_slice(),
            ["charts", _] | [_, "charts", _]
        )
}

/// Whether a path inside a chart archive is the chart's own `Chart.yaml`:
/// helm reads it from the archive's top directory.
fn is_chart_yaml(path: &str) -> bool {
    matches!(
        path.split('/').collect::<Vec<_>>().as_slice(),
        [dir, "Chart.yaml"] if !dir.is_empty()
    )
}

/// The `Chart.yaml` the index pass kept from a loose chart archive.
fn loose_chart_yaml(bundle: &str, file: &ScannedFile) -> Result<Bytes> {
    let item = &file.file.path;
    match &file.peek {
        Peek::Unreadable(reason) => Err(invalid(bundle, item, reason.clone())),
        Peek::Members(members) => members
            .iter()
            .find(|m| is_chart_yaml(&m.path))
            .map(|m| m.bytes.clone())
            .ok_or_else(|| invalid(bundle, item, no_chart_yaml())),
        Peek::Nothing | Peek::Whole(_) => Err(invalid(bundle, item, no_chart_yaml())),
    }
}

fn no_chart_yaml() -> String {
    "it is not a Helm chart: it holds no <chart>/Chart.yaml".into()
}

/// Opens a chart archive held in memory and reads its `Chart.yaml`, reading
/// at most [`MAX_EXPANDED_CHART_BYTES`] of tar.
fn packed_chart_yaml(archive: &[u8], limits: ReadLimits) -> Result<Bytes, String> {
    if !archive.starts_with(&GZIP_MAGIC) {
        return Err("it is not gzip-compressed".into());
    }
    let gzip = flate2::read::GzDecoder::new(archive).take(MAX_EXPANDED_CHART_BYTES);
    let mut tar = tar::Archive::new(gzip);
    let unreadable = |e: std::io::Error| format!("it is not a readable tar.gz: {e}");
    for entry in tar.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let raw = entry.path_bytes().into_owned();
        let path = String::from_utf8_lossy(&raw);
        if !entry.header().entry_type().is_file() || !is_chart_yaml(path.trim_start_matches("./")) {
            continue;
        }
        if entry.size() > limits.max_document_bytes {
            return Err(format!(
                "its Chart.yaml is {} bytes, over the limit read.max_document_bytes = {}",
                entry.size(),
                limits.max_document_bytes
            ));
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).map_err(unreadable)?;
        return Ok(Bytes::from(bytes));
    }
    Err(no_chart_yaml())
}

/// A chart's metadata as helm's `chart.Metadata` serialises it: the field
/// order of the Go struct, empty fields left out (`omitempty`).
#[derive(Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    home: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    sources: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    description: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    keywords: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    maintainers: Vec<Maintainer>,
    #[serde(skip_serializing_if = "String::is_empty")]
    icon: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    api_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    condition: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    tags: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    app_version: String,
    #[serde(skip_serializing_if = "is_false")]
    deprecated: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    kube_version: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    dependencies: Vec<Dependency>,
    #[serde(rename = "type", skip_serializing_if = "String::is_empty")]
    chart_type: String,
}

/// helm's `chart.Maintainer`.
#[derive(Debug, Default, Serialize, PartialEq)]
struct Maintainer {
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    email: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    url: String,
}

/// helm's `chart.Dependency` (`name` and `repository` are always written).
#[derive(Debug, Default, Serialize, PartialEq)]
struct Dependency {
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    version: String,
    repository: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    condition: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    enabled: bool,
    #[serde(rename = "import-values", skip_serializing_if = "Vec::is_empty")]
    import_values: Vec<serde_json::Value>,
    #[serde(rename = "export-values", skip_serializing_if = "Vec::is_empty")]
    export_values: Vec<serde_json::Value>,
    #[serde(skip_serializing_if = "String::is_empty")]
    alias: String,
}

fn is_false(value: &bool) -> bool {
    !value
}

impl Metadata {
    /// Reads `Chart.yaml` the way helm's loader does: YAML through JSON into
    /// the Go struct (keys matched without regard to case, unknown keys
    /// ignored, scalars read as text where text is expected), then
    /// `Metadata.Validate`'s clean-up of strings.
    fn parse(chart_yaml: &[u8]) -> Result<Metadata, String> {
        let value: Value = super::yaml::from_slice(chart_yaml)
            .map_err(|e| format!("its Chart.yaml is not valid YAML: {e}"))?;
        let fields = Fields::of(&value, "its Chart.yaml")?;
        let mut metadata = Metadata {
            name: fields.text("name")?,
            home: fields.text("home")?,
            sources: fields.texts("sources")?,
            version: fields.text("version")?,
            description: fields.text("description")?,
            keywords: fields.texts("keywords")?,
            maintainers: fields.list("maintainers", Maintainer::parse)?,
            icon: fields.text("icon")?,
            api_version: fields.text("apiVersion")?,
            condition: fields.text("condition")?,
            tags: fields.text("tags")?,
            app_version: fields.text("appVersion")?,
            deprecated: fields.flag("deprecated")?,
            annotations: fields.map("annotations")?,
            kube_version: fields.text("kubeVersion")?,
            dependencies: fields.list("dependencies", Dependency::parse)?,
            chart_type: fields.text("type")?,
        };
        if metadata.api_version.is_empty() {
            metadata.api_version = DEFAULT_API_VERSION.into();
        }
        metadata.sanitize();
        if metadata.name.is_empty() {
            return Err("its Chart.yaml has no name".into());
        }
        if metadata.version.is_empty() {
            return Err("its Chart.yaml has no version".into());
        }
        if !is_semver(&metadata.version) {
            return Err(format!(
                "its version {:?} is not a semantic version, which helm requires",
                metadata.version
            ));
        }
        if !matches!(metadata.chart_type.as_str(), "" | "application" | "library") {
            return Err(format!(
                "its type {:?} is neither application nor library",
                metadata.chart_type
            ));
        }
        Ok(metadata)
    }

    /// `Metadata.Validate` (and that of maintainers and dependencies)
    /// replaces whitespace with spaces and drops unprintable characters.
    fn sanitize(&mut self) {
        for text in [
            &mut self.name,
            &mut self.description,
            &mut self.home,
            &mut self.icon,
            &mut self.condition,
            &mut self.tags,
            &mut self.app_version,
            &mut self.kube_version,
        ] {
            *text = sanitize(text);
        }
        for text in self.sources.iter_mut().chain(self.keywords.iter_mut()) {
            *text = sanitize(text);
        }
        for m in &mut self.maintainers {
            for text in [&mut m.name, &mut m.email, &mut m.url] {
                *text = sanitize(text);
            }
        }
        for d in &mut self.dependencies {
            for text in [
                &mut d.name,
                &mut d.version,
                &mut d.repository,
                &mut d.condition,
            ] {
                *text = sanitize(text);
            }
            for text in &mut d.tags {
                *text = sanitize(text);
            }
        }
    }

    /// The config blob `helm push` writes: the metadata as Go's
    /// `json.Marshal` writes it.
    fn config_json(&self) -> Bytes {
        // Serialising plain structs, strings and maps cannot fail.
        let json = serde_json::to_string(self).unwrap_or_default();
        Bytes::from(go_html_escape(&json))
    }

    /// The manifest annotations `helm push` writes, without `created`: the
    /// chart's description, name, version, home, first source and
    /// maintainers, then the chart's own annotations (which may not replace
    /// the title or version).
    fn annotations_for_manifest(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut add = |key: &str, value: &str| {
            if !value.trim().is_empty() {
                out.insert(key.to_owned(), value.to_owned());
            }
        };
        add(DESCRIPTION_ANNOTATION, &self.description);
        add(TITLE_ANNOTATION, &self.name);
        add(VERSION_ANNOTATION, &self.version);
        add(URL_ANNOTATION, &self.home);
        if let Some(source) = self.sources.first() {
            add(SOURCE_ANNOTATION, source);
        }
        if !self.maintainers.is_empty() {
            let authors: Vec<String> = self
                .maintainers
                .iter()
                .map(|m| {
                    if m.email.is_empty() {
                        m.name.clone()
                    } else {
                        format!("{} ({})", m.name, m.email)
                    }
                })
                .collect();
            add(AUTHORS_ANNOTATION, &authors.join(", "));
        }
        for (key, value) in &self.annotations {
            if key != TITLE_ANNOTATION && key != VERSION_ANNOTATION {
                out.insert(key.clone(), value.clone());
            }
        }
        out
    }
}

impl Maintainer {
    fn parse(value: &Value) -> Result<Maintainer, String> {
        let fields = Fields::of(value, "a maintainer in its Chart.yaml")?;
        Ok(Maintainer {
            name: fields.text("name")?,
            email: fields.text("email")?,
            url: fields.text("url")?,
        })
    }
}

impl Dependency {
    fn parse(value: &Value) -> Result<Dependency, String> {
        let fields = Fields::of(value, "a dependency in its Chart.yaml")?;
        Ok(Dependency {
            name: fields.text("name")?,
            version: fields.text("version")?,
            repository: fields.text("repository")?,
            condition: fields.text("condition")?,
            tags: fields.texts("tags")?,
            enabled: fields.flag("enabled")?,
            import_values: fields.values("import-values")?,
            export_values: fields.values("export-values")?,
            alias: fields.text("alias")?,
        })
    }
}

/// The keys of a YAML mapping as Go's `encoding/json` matches them to struct
/// fields: without regard to case, the last of equal keys winning.
struct Fields<'a> {
    what: &'static str,
    by_key: HashMap<String, &'a Value>,
}

impl<'a> Fields<'a> {
    fn of(value: &'a Value, what: &'static str) -> Result<Fields<'a>, String> {
        let Value::Mapping(mapping) = value else {
            return Err(format!("{what} is not a mapping"));
        };
        let by_key = mapping
            .iter()
            .filter_map(|(k, v)| scalar_text(k).map(|k| (k.to_lowercase(), v)))
            .collect();
        Ok(Fields { what, by_key })
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.by_key
            .get(&key.to_lowercase())
            .copied()
            .filter(|v| !v.is_null())
    }

    fn wrong(&self, key: &str, expected: &str) -> String {
        format!("{key} in {} is not {expected}", self.what)
    }

    fn text(&self, key: &str) -> Result<String, String> {
        match self.get(key) {
            None => Ok(String::new()),
            Some(value) => scalar_text(value).ok_or_else(|| self.wrong(key, "text")),
        }
    }

    fn texts(&self, key: &str) -> Result<Vec<String>, String> {
        self.list(key, |v| {
            scalar_text(v).ok_or_else(|| self.wrong(key, "a list of text"))
        })
    }

    fn flag(&self, key: &str) -> Result<bool, String> {
        match self.get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.wrong(key, "true or false")),
        }
    }

    fn map(&self, key: &str) -> Result<BTreeMap<String, String>, String> {
        match self.get(key) {
            None => Ok(BTreeMap::new()),
            Some(Value::Mapping(mapping)) => mapping
                .iter()
                .map(|(k, v)| match (scalar_text(k), scalar_text(v)) {
                    (Some(k), Some(v)) => Ok((k, v)),
                    _ => Err(self.wrong(key, "a mapping of text to text")),
                })
                .collect(),
            Some(_) => Err(self.wrong(key, "a mapping")),
        }
    }

    fn list<T>(
        &self,
        key: &str,
        item: impl Fn(&Value) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Sequence(items)) => items
                .iter()
                .map(|v| {
                    if v.is_null() {
                        Err(self.wrong(key, "a list without empty entries"))
                    } else {
                        item(v)
                    }
                })
                .collect(),
            Some(_) => Err(self.wrong(key, "a list")),
        }
    }

    fn values(&self, key: &str) -> Result<Vec<serde_json::Value>, String> {
        self.list(key, |v| Ok(json_value(v)))
    }
}

/// A YAML scalar as the text Go reads into a string field: strings as they
/// are, numbers as JSON writes them (`1.0` → `1`), booleans as words.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(number_text(n)),
        Value::Tagged(tagged) => scalar_text(&tagged.value),
        Value::Null | Value::Sequence(_) | Value::Mapping(_) => None,
    }
}

fn number_text(number: &serde_yaml_ng::Number) -> String {
    match (number.as_i64(), number.as_u64(), number.as_f64()) {
        (Some(i), _, _) => i.to_string(),
        (None, Some(u), _) => u.to_string(),
        (None, None, Some(f)) => f.to_string(),
        (None, None, None) => number.to_string(),
    }
}

/// Any YAML value as the JSON Go round-trips it through `interface{}`: keys
/// sorted, numbers as float64 (integral ones written without a fraction).
fn json_value(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => serde_json::Value::from(f as i64),
            Some(f) => serde_json::Value::from(f),
            None => serde_json::Value::Null,
        },
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Sequence(items) => serde_json::Value::Array(items.iter().map(json_value).collect()),
        Value::Mapping(mapping) => {
            let sorted: BTreeMap<String, serde_json::Value> = mapping
                .iter()
                .filter_map(|(k, v)| scalar_text(k).map(|k| (k, json_value(v))))
                .collect();
            serde_json::Value::Object(sorted.into_iter().collect())
        }
        Value::Tagged(tagged) => json_value(&tagged.value),
    }
}

/// A version helm accepts (Masterminds semver, loose): `v` optional, one to
/// three numbers, then an optional `-prerelease` and `+build` of dot-separated
/// alphanumeric identifiers.
fn is_semver(version: &str) -> bool {
    let version = version.strip_prefix('v').unwrap_or(version);
    let (rest, build) = match version.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (version, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let identifiers = |text: &str| {
        text.split('.').all(|part| {
            !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
    };
    let numbers: Vec<&str> = core.split('.').collect();
    (1..=3).contains(&numbers.len())
        && numbers
            .iter()
            .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        && pre.is_none_or(identifiers)
        && build.is_none_or(identifiers)
}

/// helm's `sanitizeString`: whitespace becomes a space, unprintable
/// characters are dropped.
fn sanitize(text: &str) -> String {
    text.chars()
        .filter_map(|c| {
            if c.is_whitespace() {
                Some(' ')
            } else if c.is_control() || is_format_char(c) {
                None
            } else {
                Some(c)
            }
        })
        .collect()
}

/// Invisible formatting characters Go's `unicode.IsPrint` rejects beside
/// control characters (zero-width spaces and joiners, bidi marks, BOM).
fn is_format_char(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}' | '\u{00ad}')
}

/// Go's `json.Marshal` escapes `<`, `>`, `&`, U+2028 and U+2029 inside
/// strings; none of them can appear in JSON outside a string.
fn go_html_escape(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_the_metadata_as_helm_writes_it() {
        // The config `helm push` (v3.17) wrote for the same Chart.yaml.
        let chart_yaml = br#"
apiVersion: v2
name: demo
description: A demo chart <with> & stuff
version: 1.2.3+build.5
appVersion: "2.0"
home: https://example.com
sources:
  - https://github.com/acme/demo
maintainers:
  - name: Ann
    email: ann@example.com
  - email: bob@example.com
keywords: [a, b]
annotations:
  org.opencontainers.image.description: overridden
  zeta: z
  alpha: a
dependencies:
  - name: sub
    version: 0.1.0
    repository: file://sub
    condition: sub.enabled
    tags: [x]
    import-values: [child]
    alias: s2
"#;
        let metadata = Metadata::parse(chart_yaml).expect("parsed");
        assert_eq!(
            std::str::from_utf8(&metadata.config_json()).expect("utf-8"),
            r#"{"name":"demo","home":"https://example.com","sources":["https://github.com/acme/demo"],"version":"1.2.3+build.5","description":"A demo chart \u003cwith\u003e \u0026 stuff","keywords":["a","b"],"maintainers":[{"name":"Ann","email":"ann@example.com"},{"email":"bob@example.com"}],"apiVersion":"v2","appVersion":"2.0","annotations":{"alpha":"a","org.opencontainers.image.description":"overridden","zeta":"z"},"dependencies":[{"name":"sub","version":"0.1.0","repository":"file://sub","condition":"sub.enabled","tags":["x"],"import-values":["child"],"alias":"s2"}]}"#
        );
        let annotations = metadata.annotations_for_manifest();
        let expected: BTreeMap<String, String> = [
            ("alpha", "a"),
            (
                AUTHORS_ANNOTATION,
                "Ann (ann@example.com),  (bob@example.com)",
            ),
            (DESCRIPTION_ANNOTATION, "overridden"),
            (SOURCE_ANNOTATION, "https://github.com/acme/demo"),
            (TITLE_ANNOTATION, "demo"),
            (URL_ANNOTATION, "https://example.com"),
            (VERSION_ANNOTATION, "1.2.3+build.5"),
            ("zeta", "z"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(annotations, expected);
    }

    #[test]
    fn scalars_are_read_as_helm_reads_them() {
        // helm reads `version: 1.0` as "1" and `appVersion: 1.10` as "1.1",
        // turns a tab into a space, and defaults apiVersion to v1.
        let metadata = Metadata::parse(
            b"name: num\nversion: 1.0\nappVersion: 1.10\ndescription: \"tab\\there\"\ndeprecated: true\nkubeVersion: \">=1.20\"\n",
        )
        .expect("parsed");
        assert_eq!(
            std::str::from_utf8(&metadata.config_json()).expect("utf-8"),
            r#"{"name":"num","version":"1","description":"tab here","apiVersion":"v1","appVersion":"1.1","deprecated":true,"kubeVersion":"\u003e=1.20"}"#
        );
    }

    #[test]
    fn a_chart_yaml_without_name_or_version_is_refused() {
        let no_version = Metadata::parse(b"apiVersion: v2\nname: x\n").expect_err("refused");
        assert!(no_version.contains("no version"), "{no_version}");
        let no_name = Metadata::parse(b"apiVersion: v2\nversion: 1.0.0\n").expect_err("refused");
        assert!(no_name.contains("no name"), "{no_name}");
        let not_yaml = Metadata::parse(b"name: [unclosed").expect_err("refused");
        assert!(not_yaml.contains("not valid YAML"), "{not_yaml}");
    }

    #[test]
    fn versions_are_checked_as_helm_checks_them() {
        for good in [
            "1",
            "1.0",
            "1.2.3",
            "v1.2.3",
            "1.2.3-rc.1",
            "1.2.3+build.7",
            "1.0.0-a-b+c",
        ] {
            assert!(is_semver(good), "{good}");
        }
        for bad in [
            "",
            "latest",
            "1.2.3.4",
            "1..2",
            "1.2.3-",
            "1.2.3+",
            "1.2.3-a_b",
        ] {
            assert!(!is_semver(bad), "{bad}");
        }
        let error = Metadata::parse(b"name: x\nversion: latest\n").expect_err("refused");
        assert!(error.contains("not a semantic version"), "{error}");
        let error =
            Metadata::parse(b"name: x\nversion: 1.0.0\ntype: plugin\n").expect_err("refused");
        assert!(error.contains("neither application nor library"), "{error}");
    }

    #[test]
    fn charts_are_found_loose_and_inside_packs() {
        assert!(is_chart_path("charts/nginx-1.0.0.tgz"));
        assert!(!is_chart_path("charts/README.md"));
        assert!(is_pack_chart("charts/nginx-1.0.0.tgz"));
        assert!(is_pack_chart("nginx-1.0/charts/nginx-1.0.0.tgz"));
        assert!(!is_pack_chart("nginx-1.0/values.yaml"));
        assert!(is_chart_yaml("nginx/Chart.yaml"));
        assert!(!is_chart_yaml("Chart.yaml"));
        assert!(!is_chart_yaml("nginx/charts/sub/Chart.yaml"));
    }
}

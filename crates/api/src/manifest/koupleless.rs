//! Koupleless' `ModuleDeployment` (`koupleless.io/v1alpha1`), mapped onto
//! berth's, so a team applies the manifests it has with `berth apply`.
//!
//! | Koupleless field | berth |
//! |---|---|
//! | `spec.baseDeploymentName` | `spec.baseSelector.group` (a base deployment is a base group) |
//! | `spec.selector.matchLabels` | more `spec.baseSelector` labels |
//! | `spec.template.spec.module.{name, version, url}` | `spec.module.{name, version, artifact}` |
//! | `spec.template.spec.module.md5` | `spec.module.digest`: it must hold `sha256:<hex>`, berth pins artifacts by sha256 |
//! | `spec.replicas` | `spec.replicas`; `-1` (one per base) is `replicas: all`, a peer deployment |
//! | `spec.operationStrategy.{needConfirm, batchCount, grayTimeBetweenBatchSeconds}` | `spec.strategy.{needConfirm, batches, pauseBetween}` |
//! | `spec.operationStrategy.upgradePolicy: install_then_uninstall` | what a berth base always does |
//! | `spec.schedulingStrategy.schedulingPolicy: scatter / stacking` | `spec.placement: spread / binPack` |
//!
//! What berth cannot honour is refused with the field's path and why:
//! `useBeta: true`, other upgrade policies, `serviceStrategy`,
//! `matchExpressions`, namespaces other than `default`, Java jars, md5 digests.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{
    API_VERSION, DeploymentSpec, ManifestError, Metadata, ModuleDeployment, ModuleRef,
    PlacementPolicy, Replicas, Strategy, at, with_paths,
};

/// The Koupleless API versions taken (the and the published ones).
pub const API_VERSIONS: &[&str] = &[
    "koupleless.io/v1alpha1",
    "koupleless.alipay.com/v1alpha1",
    "serverless.alipay.com/v1alpha1",
];

/// The base label `spec.baseDeploymentName` selects on.
pub const GROUP_LABEL: &str = "group";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Document {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    metadata: KMetadata,
    spec: KSpec,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KMetadata {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Kept by Kubernetes for tools; nothing in berth reads them.
    #[serde(default)]
    #[allow(dead_code)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KSpec {
    #[serde(default)]
    base_deployment_name: Option<String>,
    #[serde(default)]
    selector: Option<Selector>,
    template: Template,
    replicas: i64,
    #[serde(default)]
    operation_strategy: Option<OperationStrategy>,
    #[serde(default)]
    scheduling_strategy: Option<SchedulingStrategy>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Selector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    #[serde(default)]
    match_expressions: Vec<serde_yaml_ng::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Template {
    spec: TemplateSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateSpec {
    module: KModule,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KModule {
    name: String,
    version: String,
    url: String,
    #[serde(default)]
    md5: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OperationStrategy {
    #[serde(default)]
    need_confirm: bool,
    #[serde(default)]
    use_beta: bool,
    #[serde(default)]
    batch_count: Option<u32>,
    #[serde(default)]
    gray_time_between_batch_seconds: Option<u64>,
    #[serde(default)]
    upgrade_policy: Option<String>,
    #[serde(default)]
    service_strategy: Option<serde_yaml_ng::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SchedulingStrategy {
    #[serde(default)]
    scheduling_policy: Option<String>,
}

/// The Koupleless form of a berth ModuleDeployment (`berth get deployments
/// -o yaml --as koupleless`): the inverse of the mapping above. A route,
/// traffic rules, scale-to-zero and autoscale, which Koupleless has no
/// field for, are left out (an autoscaled deployment shows its
/// `minReplicas` as `replicas`).
pub fn to_koupleless(d: &ModuleDeployment) -> serde_json::Value {
    let spec = &d.spec;
    let mut match_labels = spec.base_selector.clone();
    let group = match_labels.remove(GROUP_LABEL);
    let mut kspec = serde_json::json!({
        "template": {"spec": {"module": {
            "name": spec.module.name,
            "version": spec.module.version,
            "url": spec.module.artifact,
            "md5": spec.module.digest,
        }}},
        "replicas": match (&spec.replicas, &spec.autoscale) {
            (Some(Replicas::Count(n)), _) => i64::from(*n),
            (Some(Replicas::All), _) => -1,
            (None, Some(a)) => i64::from(a.min_replicas),
            (None, None) => 0,
        },
        "operationStrategy": {
            "needConfirm": spec.strategy.need_confirm,
            "useBeta": false,
            "batchCount": spec.strategy.batches,
            "grayTimeBetweenBatchSeconds": spec
                .strategy
                .pause_between
                .as_deref()
                .and_then(|p| humantime::parse_duration(p).ok())
                .map_or(0, |d| d.as_secs()),
            "upgradePolicy": "install_then_uninstall",
        },
        "schedulingStrategy": {"schedulingPolicy": match spec.placement {
            PlacementPolicy::Spread => "scatter",
            PlacementPolicy::BinPack => "stacking",
        }},
    });
    if let Some(group) = group {
        kspec["baseDeploymentName"] = group.into();
    }
    if !match_labels.is_empty() {
        kspec["selector"] = serde_json::json!({"matchLabels": match_labels});
    }
    let mut metadata = serde_json::json!({"name": d.metadata.name});
    if !d.metadata.labels.is_empty() {
        metadata["labels"] = serde_json::json!(d.metadata.labels);
    }
    serde_json::json!({
        "apiVersion": API_VERSIONS[0],
        "kind": "ModuleDeployment",
        "metadata": metadata,
        "spec": kspec,
    })
}

/// Names a berth-manifest problem by the Koupleless field it came from.
pub(super) fn path_of(mut error: ManifestError) -> ManifestError {
    let koupleless = match error.path.as_str() {
        "spec.module.name" => "spec.template.spec.module.name",
        "spec.module.version" => "spec.template.spec.module.version",
        "spec.module.artifact" => "spec.template.spec.module.url",
        "spec.module.digest" => "spec.template.spec.module.md5",
        "spec.strategy.batches" => "spec.operationStrategy.batchCount",
        "spec.strategy.pauseBetween" => "spec.operationStrategy.grayTimeBetweenBatchSeconds",
        _ => return error,
    };
    error.path = koupleless.into();
    error
}

/// Parses a Koupleless ModuleDeployment and maps it onto berth's (not yet
/// validated as a berth manifest: the caller does that).
pub(super) fn parse(text: &str) -> Result<ModuleDeployment, ManifestError> {
    let doc: Document = with_paths(text)?;
    if let Some(ns) = &doc.metadata.namespace
        && ns != "default"
    {
        return Err(at(
            "metadata.namespace",
            format!(
                "`{ns}`: berth has no namespaces; one controller is one namespace. Drop the field \
                 or use a controller per namespace"
            ),
        ));
    }
    let spec = doc.spec;
    let mut base_selector = BTreeMap::new();
    if let Some(selector) = spec.selector {
        if !selector.match_expressions.is_empty() {
            return Err(at(
                "spec.selector.matchExpressions",
                "berth selects bases by label equality only; use matchLabels",
            ));
        }
        base_selector.extend(selector.match_labels);
    }
    if let Some(group) = spec.base_deployment_name {
        if let Some(other) = base_selector.get(GROUP_LABEL)
            && *other != group
        {
            return Err(at(
                "spec.selector.matchLabels.group",
                format!(
                    "`{other}` contradicts baseDeploymentName `{group}`, which berth reads as \
                     the base group (label `{GROUP_LABEL}`)"
                ),
            ));
        }
        base_selector.insert(GROUP_LABEL.to_string(), group);
    }
    let replicas = match spec.replicas {
        // Koupleless' "one replica on every base of the group": a peer deployment.
        -1 => Replicas::All,
        n if n < 0 || n > i64::from(u32::MAX) => {
            return Err(at(
                "spec.replicas",
                format!(
                    "{n} is out of range; give 0 or more, or -1 for one on every matching base"
                ),
            ));
        }
        n => Replicas::Count(n as u32),
    };
    let module = spec.template.spec.module;
    let url_path = "spec.template.spec.module.url";
    if module.url.to_ascii_lowercase().ends_with(".jar") {
        return Err(at(
            url_path,
            format!(
                "`{}` is a Java jar; berth runs WebAssembly components: build the module for \
                 wasm32-wasip2 (`berth build`) and point url at the .wasm (see docs/koupleless.md)",
                module.url
            ),
        ));
    }
    let md5_path = "spec.template.spec.module.md5";
    let digest = match module.md5 {
        None => {
            return Err(at(
                md5_path,
                "missing; berth pins every artifact by its sha256: set md5 to `sha256:<hex>` \
                 (`sha256sum module.wasm`)",
            ));
        }
        Some(d) if d.starts_with("sha256:") => d,
        Some(d) => {
            return Err(at(
                md5_path,
                format!(
                    "`{d}` is not a sha256 digest; berth checks artifacts by sha256 only: set md5 \
                     to `sha256:<hex>` (`sha256sum module.wasm`)"
                ),
            ));
        }
    };
    let mut strategy = Strategy::default();
    if let Some(ops) = spec.operation_strategy {
        if ops.use_beta {
            return Err(at(
                "spec.operationStrategy.useBeta",
                "berth has no beta batch; use batchCount with needConfirm: true to check the \
                 first batch before the others",
            ));
        }
        if ops.service_strategy.is_some() {
            return Err(at(
                "spec.operationStrategy.serviceStrategy",
                "berth creates no Kubernetes Service; the gateway routes to the module by its \
                 route. Drop the field",
            ));
        }
        if let Some(policy) = ops.upgrade_policy {
            let normalized = policy.to_ascii_lowercase().replace('_', "");
            if normalized != "installthenuninstall" {
                return Err(at(
                    "spec.operationStrategy.upgradePolicy",
                    format!(
                        "`{policy}` is not supported: a berth base always installs the new \
                         version beside the old, switches atomically, then removes the old \
                         (install_then_uninstall)"
                    ),
                ));
            }
        }
        strategy.need_confirm = ops.need_confirm;
        if let Some(batches) = ops.batch_count {
            strategy.batches = batches;
        }
        if let Some(seconds) = ops.gray_time_between_batch_seconds
            && seconds > 0
        {
            strategy.pause_between = Some(format!("{seconds}s"));
        }
    }
    let placement = match spec
        .scheduling_strategy
        .and_then(|s| s.scheduling_policy)
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("scatter") => PlacementPolicy::Spread,
        Some("stacking") => PlacementPolicy::BinPack,
        Some(other) => {
            return Err(at(
                "spec.schedulingStrategy.schedulingPolicy",
                format!("`{other}` is not a policy; use scatter (spread) or stacking (bin-pack)"),
            ));
        }
    };
    Ok(ModuleDeployment {
        api_version: API_VERSION.into(),
        kind: "ModuleDeployment".into(),
        metadata: Metadata {
            name: doc.metadata.name,
            labels: doc.metadata.labels,
        },
        spec: DeploymentSpec {
            module: ModuleRef {
                name: module.name,
                version: module.version,
                artifact: module.url,
                digest,
            },
            replicas: Some(replicas),
            scale_to_zero: None,
            autoscale: None,
            base_selector,
            strategy,
            placement,
            priority: Default::default(),
            route: None,
            rules: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use crate::manifest::{Manifest, PlacementPolicy, Replicas, parse};

    const DIGEST: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    /// Koupleless' published sample, with a wasm module and its sha256.
    fn sample() -> String {
        format!(
            "apiVersion: koupleless.io/v1alpha1
kind: ModuleDeployment
metadata:
  labels:
    app.kubernetes.io/name: moduledeployment
  name: moduledeployment-sample
spec:
  baseDeploymentName: dynamic-stock-deployment
  template:
    spec:
      module:
        name: provider
        version: '1.0.2'
        url: http://example.invalid/provider-1.0.2.wasm
        md5: \"{DIGEST}\"
  replicas: 2
  operationStrategy:
    upgradePolicy: install_then_uninstall
    needConfirm: true
    grayTimeBetweenBatchSeconds: 30
    useBeta: false
    batchCount: 2
  schedulingStrategy:
    schedulingPolicy: stacking
"
        )
    }

    #[test]
    fn a_koupleless_manifest_maps_onto_berths() {
        let Manifest::ModuleDeployment(d) = parse(&sample()).unwrap();
        assert_eq!(d.api_version, "berth.dev/v1");
        assert_eq!(d.metadata.name, "moduledeployment-sample");
        assert_eq!(d.spec.module.name, "provider");
        assert_eq!(d.spec.module.version, "1.0.2");
        assert_eq!(
            d.spec.module.artifact,
            "http://example.invalid/provider-1.0.2.wasm"
        );
        assert_eq!(d.spec.module.digest, DIGEST);
        assert_eq!(d.spec.replicas, Some(Replicas::Count(2)));
        assert_eq!(d.spec.base_selector["group"], "dynamic-stock-deployment");
        assert_eq!(d.spec.strategy.batches, 2);
        assert!(d.spec.strategy.need_confirm);
        assert_eq!(d.spec.strategy.pause_between.as_deref(), Some("30s"));
        assert_eq!(d.spec.placement, PlacementPolicy::BinPack);
        // The mapped form is a berth manifest in its own right.
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(parse(&json).unwrap(), Manifest::ModuleDeployment(d));

        let scatter = sample().replace("stacking", "Scatter");
        let Manifest::ModuleDeployment(d) = parse(&scatter).unwrap();
        assert_eq!(d.spec.placement, PlacementPolicy::Spread);
        let published = sample().replace("koupleless.io", "koupleless.alipay.com");
        assert!(parse(&published).is_ok());
    }

    #[test]
    fn the_koupleless_form_maps_back_to_the_same_deployment() {
        let Manifest::ModuleDeployment(d) = parse(&sample()).unwrap();
        let form = super::to_koupleless(&d);
        assert_eq!(form["apiVersion"], "koupleless.io/v1alpha1");
        assert_eq!(
            form["spec"]["baseDeploymentName"],
            "dynamic-stock-deployment"
        );
        assert_eq!(
            form["spec"]["operationStrategy"]["grayTimeBetweenBatchSeconds"],
            30
        );
        let yaml = serde_yaml_ng::to_string(&form).unwrap();
        assert_eq!(parse(&yaml).unwrap(), Manifest::ModuleDeployment(d));
    }

    #[test]
    fn replicas_minus_one_is_a_peer_deployment_both_ways() {
        // batchCount 2 with `all`: nothing to check against a count.
        let peer = sample().replace("replicas: 2", "replicas: -1");
        let Manifest::ModuleDeployment(d) = parse(&peer).unwrap();
        assert_eq!(d.spec.replicas, Some(Replicas::All));
        let form = super::to_koupleless(&d);
        assert_eq!(form["spec"]["replicas"], -1);
        let yaml = serde_yaml_ng::to_string(&form).unwrap();
        assert_eq!(parse(&yaml).unwrap(), Manifest::ModuleDeployment(d));
    }

    /// Koupleless' published samples, byte for byte (sources in the
    /// fixtures README).
    const PROVIDER: &str =
        include_str!("../../tests/fixtures/koupleless/moduledeployment_provider.yaml");
    const FACADE: &str =
        include_str!("../../tests/fixtures/koupleless/moduledeployment_facade.yaml");
    const PROVIDER_JAR: &str = "http://serverless-opensource.oss-cn-shanghai.aliyuncs.com/module-packages/stable/dynamic-provider-1.0.2-ark-biz.jar";
    const FACADE_JAR: &str = "http://serverless-opensource.oss-cn-shanghai.aliyuncs.com/module-packages/stable/dynamic-facade-1.0.0-ark-biz.jar";

    fn refusal(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_published_samples_are_refused_at_their_java_jar() {
        for (sample, jar) in [(PROVIDER, PROVIDER_JAR), (FACADE, FACADE_JAR)] {
            assert!(sample.starts_with("apiVersion: koupleless.io/v1alpha1\n"));
            let message = refusal(sample);
            assert!(
                message.starts_with(&format!(
                    "spec.template.spec.module.url: `{jar}` is a Java jar; berth runs WebAssembly components"
                )),
                "{message}"
            );
            assert!(message.contains("docs/koupleless.md"), "{message}");
        }
    }

    #[test]
    fn the_published_provider_sample_maps_once_it_names_a_wasm_and_its_sha256() {
        let wasm = "http://example.invalid/dynamic-provider-1.0.2.wasm";
        let text = PROVIDER.replace(PROVIDER_JAR, wasm);
        let message = refusal(&text);
        assert!(
            message.starts_with(
                "spec.template.spec.module.md5: missing; berth pins every artifact by its sha256"
            ),
            "{message}"
        );

        let text = text.replace(
            &format!("url: {wasm}"),
            &format!("url: {wasm}\n        md5: \"{DIGEST}\""),
        );
        let Manifest::ModuleDeployment(d) = parse(&text).unwrap();
        assert_eq!(d.api_version, "berth.dev/v1");
        assert_eq!(d.metadata.name, "moduledeployment-sample-provider");
        assert_eq!(d.metadata.labels.len(), 5);
        assert_eq!(
            d.metadata.labels["app.kubernetes.io/part-of"],
            "module-controller"
        );
        assert_eq!(d.spec.module.name, "provider");
        assert_eq!(d.spec.module.version, "1.0.2");
        assert_eq!(d.spec.module.artifact, wasm);
        assert_eq!(d.spec.module.digest, DIGEST);
        assert_eq!(d.spec.replicas, Some(Replicas::Count(1)));
        assert_eq!(
            d.spec.base_selector.iter().collect::<Vec<_>>(),
            [(
                &"group".to_string(),
                &"dynamic-stock-deployment".to_string()
            )]
        );
        assert!(!d.spec.strategy.need_confirm);
        assert_eq!(d.spec.strategy.batches, 1);
        assert_eq!(d.spec.strategy.pause_between.as_deref(), Some("120s"));
        assert_eq!(d.spec.placement, PlacementPolicy::Spread);
    }

    #[test]
    fn the_published_facade_samples_upgrade_policy_is_refused_by_path() {
        let wasm = "http://example.invalid/dynamic-facade-1.0.0.wasm";
        let text = FACADE.replace(
            &format!("url: {FACADE_JAR}"),
            &format!("url: {wasm}\n        md5: \"{DIGEST}\""),
        );
        let message = refusal(&text);
        assert!(
            message.starts_with(
                "spec.operationStrategy.upgradePolicy: `uninstall_then_install` is not supported"
            ),
            "{message}"
        );
        // The rest of the sample maps once that line says what berth does.
        let text = text.replace("uninstall_then_install", "install_then_uninstall");
        let Manifest::ModuleDeployment(d) = parse(&text).unwrap();
        assert_eq!(d.spec.module.name, "dynamic-facade");
        assert!(d.spec.strategy.need_confirm);
    }

    #[test]
    fn what_berth_cannot_honour_is_refused_by_path() {
        let cases = [
            (
                "replicas: 2",
                "replicas: -2",
                "spec.replicas: -2 is out of range",
            ),
            (
                "useBeta: false",
                "useBeta: true",
                "spec.operationStrategy.useBeta:",
            ),
            (
                "upgradePolicy: install_then_uninstall",
                "upgradePolicy: uninstall_then_install",
                "spec.operationStrategy.upgradePolicy: `uninstall_then_install` is not supported",
            ),
            (
                "useBeta: false",
                "useBeta: false\n    serviceStrategy: { enableModuleService: true }",
                "spec.operationStrategy.serviceStrategy:",
            ),
            (
                "schedulingPolicy: stacking",
                "schedulingPolicy: random",
                "spec.schedulingStrategy.schedulingPolicy: `random`",
            ),
            (
                "provider-1.0.2.wasm",
                "provider-1.0.2-ark-biz.jar",
                "spec.template.spec.module.url: `http://example.invalid/provider-1.0.2-ark-biz.jar` is a Java jar",
            ),
            (
                DIGEST,
                "6f1ed002ab5595859014ebf0951522d9",
                "spec.template.spec.module.md5: `6f1ed002ab5595859014ebf0951522d9` is not a sha256 digest",
            ),
            (
                "  name: moduledeployment-sample",
                "  name: moduledeployment-sample\n  namespace: team-a",
                "metadata.namespace: `team-a`: berth has no namespaces",
            ),
            (
                "baseDeploymentName: dynamic-stock-deployment",
                "baseDeploymentName: d\n  selector: { matchExpressions: [{key: a, operator: In, values: [b]}] }",
                "spec.selector.matchExpressions:",
            ),
            (
                "batchCount: 2",
                "batchCount: 2\n    colour: red",
                "spec.operationStrategy: unknown field `colour`",
            ),
            (
                "replicas: 2",
                "replicas: two",
                "spec.replicas: invalid type",
            ),
            (
                "batchCount: 2",
                "batchCount: 3",
                "spec.operationStrategy.batchCount: 3 batches for 2 replicas",
            ),
            (
                DIGEST,
                "sha256:abc",
                "spec.template.spec.module.md5: expected `sha256:` followed by 64 hex",
            ),
            (
                "name: provider",
                "name: Provider",
                "spec.template.spec.module.name:",
            ),
        ];
        for (from, to, expected) in cases {
            let text = sample();
            assert!(text.contains(from), "{from}");
            let message = parse(&text.replace(from, to)).unwrap_err().to_string();
            assert!(
                message.contains(expected),
                "{message}\nexpected: {expected}"
            );
        }
    }
}

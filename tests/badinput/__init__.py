"""The bad-input corpus (issue 13): 249 cases, each refused with a non-zero exit, ONE line naming
the culprit, no traceback, and nothing written (tree hash of the repository and source, and of the
bucket listing where a bucket is involved, before and after). harness.py holds those assertions.

| file | category | cases |
| --- | --- | --- |
| test_config_yaml.py | tritonops.yaml: schema, URLs (`..` in buckets), names, references, YAML syntax | 51 |
| test_config_yaml.py | tritonops.yaml: paths on this machine (repository, state_dir, credentials_file, profile) | 6 |
| test_config_yaml.py | tritonops.yaml: encoding (non-UTF-8, binary), a folder, a missing file | 8 |
| test_recipes.py | recipes: schema of source, inputs, targets, triton, destination, data, speed | 45 |
| test_recipes.py | recipes: YAML syntax and encoding | 4 |
| test_sources_and_pbtxt.py | `repo add --from`: symlinks (7 kinds), FIFO, socket, devices, names, emptiness | 19 |
| test_sources_and_pbtxt.py | config.pbtxt given to `repo add --config` (syntax, fields, I/O, policy, ensembles, encoding) | 27 |
| test_manifests_and_index.py | manifests read by `repo add` (negative sizes, non-hex sha256s, escaping paths and version 0 included) | 17 |
| test_manifests_and_index.py | repository index and damaged trees, via `repo validate` | 16 |
| test_cli_args.py | CLI usage errors (exit 2) and refused values (exit 1) | 46 |
| test_with_servers.py | live Triton and buckets (unknown model, probe, profile, residency, a repository damaged after its index) | 10 |

test_kill_repo_add.py is the fault test beside it: SIGKILL of a real `repo add` at 7 points.
"""

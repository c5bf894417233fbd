"""The `apps` stage: the platform's Helm releases, applied from the controller with the fetched kubeconfig.

One idea per module: `spec` (k8s/releases.yml, the dependency order), `render` (values, manifests and
Secret data from the inventory), `helm` (the CLI, argv lists), `kubeapply` (server-side apply, Secrets,
lookups), `engine` (plan and apply, release by release), `pki` (the Minio CA), `paths` (where the
kubeconfig and the CA live). Secrets come from `picluster.secrets`, the local store. The bare-metal part
(Minio on the `s3` host, restic on every Pi) is `picluster.stages.backup`, the stage's per-host plan.
"""

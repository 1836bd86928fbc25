"""KubeRay manifests of the project, generated from its typed configs and checked offline.

`config` holds the small cluster config (images, pod sizes, Secrets, which stage config each job runs),
`sizing` turns a stage config's `ray:` section into worker pods, `render` writes the RayCluster and one
RayJob per pipeline, and `validate` checks a manifest without a Kubernetes cluster: the project's JSON
schema of the `ray.io/v1` fields (`schema`), every pod template against the Kubernetes schema
(kubernetes-validate), and the project's own rules (`rules`).
"""

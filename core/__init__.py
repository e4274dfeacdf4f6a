"""The floor: small pieces every app may import; core imports Django and third-party libraries only.

env (typed environment reads), fields (encrypted text), durations (the one duration format),
requestid (the id shared by a request, its logs and its tasks), diffs (the one unified diff),
kustomize (the one kustomization reader and the rule for "the version"), http (the request types
views are annotated with: `request.htmx`, a signed-in `request.user`).
"""

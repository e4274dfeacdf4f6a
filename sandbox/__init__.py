"""Dev/test sandbox: demo GitOps repo generator, Argo CD emulator and forge emulator.

Only ``sandbox`` itself and ``tests`` may import from here; the portal reaches the sandbox over HTTP/Git.
"""

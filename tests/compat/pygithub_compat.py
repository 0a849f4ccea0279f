"""PyGithub, unmodified, against a ghmesh node (GHMESH_BASE) backed by the fake GitHub.

Each step is what a CI script does with PyGithub; any failure raises and the process
exits non-zero. Prints one JSON line of what it saw.
"""

import json
import os

from github import Auth, Github, UnknownObjectException

base = os.environ["GHMESH_BASE"]
g = Github(base_url=base, auth=Auth.Token("ghp_pygithub"), retry=None)

repo = g.get_repo("acme/widgets")
assert repo.full_name == "acme/widgets", repo.full_name
# URLs in bodies point back at the proxy: PyGithub builds later requests from them and
# refuses any URL outside its base_url.
assert repo.url.startswith(base), repo.url

issues = list(repo.get_issues(state="all"))
assert len(issues) > 30, f"pagination through Link headers: {len(issues)}"

contents = repo.get_contents("README.md")
assert contents is not None

issue = repo.get_issue(3)
before = issue.raw_data["version"]
comment = issue.create_comment("hello from PyGithub")
after = repo.get_issue(3).raw_data["version"]
assert after > before, f"the read after the write sees it: {before} -> {after}"

# A conditional poll: PyGithub sends its ETag; the node answers 304.
assert repo.update() is False, "unchanged repository: 304"

try:
    g.get_repo("acme/missing")
    raise AssertionError("a missing repository must raise")
except UnknownObjectException as e:
    assert e.status == 404

print(json.dumps({"issues": len(issues), "before": before, "after": after, "ok": True}))

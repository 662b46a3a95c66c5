"""``actions/checkout`` for a local run: the repository is the working tree the run started in; nothing is fetched.

* Without ``path:`` the workspace *is* the checkout: the step reports the commit and changes nothing
  (it never cleans, resets or switches your working tree).
* With ``path:`` it makes a local clone of the repository at the requested ref into that folder.
* Another ``repository:`` would need the network, so the step fails and says so.
* Inputs that only matter for fetching (token, ssh-*, fetch-depth, filter, lfs, ...) are accepted and noted.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from runcache.runner.actions.base import ActionContext, ActionFailed, BuiltinAction, InputSpec

INPUTS = (
    InputSpec("repository", default="${{ github.repository }}"),
    InputSpec("ref"),
    InputSpec("token", default="${{ github.token }}"),
    InputSpec("ssh-key"),
    InputSpec("ssh-known-hosts"),
    InputSpec("ssh-strict", default="true"),
    InputSpec("ssh-user", default="git"),
    InputSpec("persist-credentials", default="true"),
    InputSpec("path"),
    InputSpec("clean", default="true"),
    InputSpec("filter"),
    InputSpec("sparse-checkout"),
    InputSpec("sparse-checkout-cone-mode", default="true"),
    InputSpec("fetch-depth", default="1"),
    InputSpec("fetch-tags", default="false"),
    InputSpec("show-progress", default="true"),
    InputSpec("lfs", default="false"),
    InputSpec("submodules", default="false"),
    InputSpec("set-safe-directory", default="true"),
    InputSpec("github-server-url"),
)
_NETWORK_ONLY = ("token", "ssh-key", "ssh-known-hosts", "fetch-depth", "fetch-tags", "filter", "lfs", "submodules")


class CheckoutAction(BuiltinAction):
    repository = "actions/checkout"
    inputs = INPUTS
    outputs = ("ref", "commit")
    has_post = True
    post_if = "always()"

    def main(self, ctx: ActionContext) -> None:
        own = str(ctx.github.get("repository", ""))
        wanted = ctx.get_input("repository") or own
        if wanted.lower() != own.lower():
            raise ActionFailed(
                f"runcache run checks out only the local repository ({own}); checking out {wanted} would need "
                "the network. Clone it in a run: step, or run the workflow from that repository."
            )
        workspace = ctx.workspace.resolve()
        path_input = ctx.get_input("path")
        target = (workspace / path_input).resolve() if path_input else workspace
        if target != workspace and workspace not in target.parents:
            raise ActionFailed(f"Repository path '{target}' is not under '{workspace}'")
        ref_input = ctx.get_input("ref")
        sha = str(ctx.github.get("sha", ""))
        ref = ref_input or str(ctx.github.get("ref", ""))
        is_git = (workspace / ".git").exists() or self._git_ok(ctx, workspace)
        if target == workspace:
            if ref_input and is_git:
                wanted_sha = self._resolve(ctx, workspace, ref_input)
                if wanted_sha is None:
                    raise ActionFailed(f"A branch or tag with the name '{ref_input}' could not be found")
                if wanted_sha != sha:
                    raise ActionFailed(
                        f"ref '{ref_input}' is {wanted_sha[:12]}, but the working tree is at {sha[:12]}; "
                        "runcache run never switches your working tree. Check the ref out yourself, or give the "
                        "step a path: to get a separate checkout of it."
                    )
            ctx.info(f"Syncing repository: {own}")
            ctx.info(f"Using the working tree at {workspace} as it is (local changes included); nothing is fetched")
        else:
            if not is_git:
                raise ActionFailed(
                    f"path: {path_input} needs a git repository to clone from, and {workspace} is not one"
                )
            commit = self._resolve(ctx, workspace, ref_input or sha) if (ref_input or sha) else None
            if commit is None:
                raise ActionFailed(f"A branch or tag with the name '{ref_input}' could not be found")
            if target.exists():
                if any(target.iterdir()) and ctx.get_input("clean").lower() != "false":
                    ctx.info(f"Deleting the contents of '{target}'")
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            ctx.info(f"Cloning {own} at {commit[:12]} into {target} (a local clone, no network)")
            ctx.run(["git", "clone", "--quiet", "--no-checkout", str(workspace), str(target)], quiet=True)
            ctx.run(["git", "-c", "advice.detachedHead=false", "checkout", "--quiet", commit], cwd=target, quiet=True)
            sha = commit
        ignored = [name for name in _NETWORK_ONLY if ctx.inputs.get(name) and name in ctx.explicit_inputs]
        if ignored:
            ctx.info(f"Not used locally: {', '.join(ignored)}")
        if ctx.get_input("sparse-checkout"):
            ctx.info("sparse-checkout is not applied locally: the whole tree is available")
        ctx.set_output("ref", ref)
        ctx.set_output("commit", sha)

    def post(self, ctx: ActionContext) -> None:
        ctx.info("Nothing to clean up: no credentials were persisted")

    @staticmethod
    def _git_ok(ctx: ActionContext, workspace: Path) -> bool:
        try:
            ctx.run(["git", "rev-parse", "--git-dir"], cwd=workspace, quiet=True)
            return True
        except (ActionFailed, OSError):
            return False

    @staticmethod
    def _resolve(ctx: ActionContext, workspace: Path, ref: str) -> str | None:
        for candidate in (ref, f"refs/remotes/origin/{ref}", f"origin/{ref}"):
            try:
                out = ctx.run(
                    ["git", "rev-parse", "--verify", "-q", f"{candidate}^{{commit}}"], cwd=workspace, quiet=True
                )
            except (ActionFailed, OSError):
                continue
            if out.strip():
                return out.strip()
        return None

"""Reading workflow files: YAML errors and schema errors with line numbers, GitHub's scalar typing, matrices."""

from __future__ import annotations

import textwrap

import pytest

from runcache.runner.matrix import MatrixError, expand_matrix, filter_combos
from runcache.runner.workflow import WorkflowError, job_order, parse_workflow, value_string

SEED = """\
name: Caching Python requirements
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v3

      - name: Cache Python Packages
        id: cache-python
        uses: actions/cache@v3
        with:
          path: ~/.cache/pip
          key: ${{ runner.os }}-pip-${{ hashFiles('**/requirements.txt') }}
          restore-keys: |
            ${{ runner.os }}-pip-

      - if: ${{ steps.cache-python.outputs.cache-hit != 'true' }}
        name: Install pip packages
        continue-on-error: true
        run: pip install -r ./requirements.txt
"""


def wf(body: str):
    return parse_workflow(textwrap.dedent(body), "w.yml")


def error_of(body: str) -> WorkflowError:
    with pytest.raises(WorkflowError) as info:
        wf(body)
    return info.value


def test_seed_workflow_reads_as_written() -> None:
    w = parse_workflow(SEED, "seed.yml")
    assert w.name == "Caching Python requirements"
    assert w.on == {"push": None}
    job = w.jobs["build"]
    assert job.runs_on == "ubuntu-latest"
    checkout, cache, install = job.steps
    assert checkout.uses == "actions/checkout@v3" and checkout.line == 7
    assert cache.id == "cache-python" and cache.line == 9
    assert cache.with_["restore-keys"] == "${{ runner.os }}-pip-\n"
    assert cache.with_lines["key"] == 14
    assert install.if_ == "${{ steps.cache-python.outputs.cache-hit != 'true' }}"
    assert install.continue_on_error is True
    assert install.run == "pip install -r ./requirements.txt"


def test_yaml_1_2_scalars_on_is_a_key_and_numbers_are_github_strings() -> None:
    w = wf(
        """
        on:
          push:
        jobs:
          a:
            runs-on: x
            steps:
              - uses: actions/setup-python@v5
                with:
                  python-version: 3.10
                  quoted: '3.10'
                  flag: yes
                  boolean: true
                  nothing:
        """
    )
    assert "push" in w.on  # not True: `on` is a plain string in YAML 1.2
    step = w.jobs["a"].steps[0]
    assert step.with_ == {"python-version": "3.1", "quoted": "3.10", "flag": "yes", "boolean": "true", "nothing": ""}


def test_value_string_follows_github() -> None:
    assert value_string(3.10) == "3.1"
    assert value_string(True) == "true"
    assert value_string(None) == ""
    assert value_string(7) == "7"
    assert value_string(1e20) == "1e+20"


J = "on: push\njobs:\n  a:\n    runs-on: x\n"  # a job header (lines 1-4)
S = J + "    steps:\n"  # ... and its steps (line 5); the first step is on line 6


@pytest.mark.parametrize(
    ("body", "line", "needle"),
    [
        ("on: [push\njobs: {}\n", 2, "flow sequence that starts on line 1"),
        ("on: push\njobs:\n  a:\n   runs-on: x\n    steps: []\n", 5, "mapping values are not allowed"),
        (S + "\t- run: x\n", 6, "tabs"),
        (S + "      - runn: echo\n", 6, "did you mean 'run'"),
        (J + "    runs-on: y\n    steps: [{run: a}]\n", 5, "already defined (line 4)"),
        (S + "      - name: n\n", 6, "neither 'run:' nor 'uses:'"),
        (S + "      - run: a\n        uses: b@v1\n", 7, "both"),
        (S + "      - run: a\n        with: {x: 1}\n", 7, "'with'"),
        (S + "      - uses: a/b@v1\n        shell: bash\n", 7, "'shell'"),
        (S + "      - uses: actions/cache\n", 6, "@<ref>"),
        (S + "      - run: a\n        id: s\n      - run: b\n        id: s\n", 8, "already used by the step on line 6"),
        (S + "      - run: a\n        id: 1bad\n", 7, "invalid step id"),
        (S + "      - run: echo ${{ nope.x }}\n", 6, "Unrecognized named-value: 'nope'"),
        (S + "      - if: steps.a.outputs.x ==\n        run: a\n", 6, "Unexpected end of expression"),
        (S + "      - run: a\n        timeout-minutes: soon\n", 7, "number of minutes"),
        (S + "      - run: a\n        continue-on-error: maybe\n", 7, "true, false or an expression"),
        (S.replace("steps:\n", "steps: []\n"), 5, "at least one step"),
        ("on: push\njobs:\n  a:\n    steps: [{run: a}]\n", 3, "no 'runs-on:'"),
        (J + "    stepz: [{run: a}]\n", 5, "did you mean 'steps'"),
        (J.replace("push", "pusj") + "    steps: [{run: a}]\n", 1, "did you mean 'push'"),
        (J + "    env:\n      A: ${{ steps.x }}\n    steps: [{run: a}]\n", 6, "'steps'"),
        (J + "    if: success() && hashFiles('x')\n    steps: [{run: a}]\n", 5, "hashFiles"),
    ],
)
def test_errors_name_the_line(body: str, line: int, needle: str) -> None:
    err = error_of(body)
    assert err.line == line, str(err)
    assert needle in str(err)
    assert str(err).startswith(f"w.yml:{line}")


def test_missing_on_jobs_and_empty_file() -> None:
    assert "no 'on:'" in str(error_of("jobs: {}\n"))
    assert "no 'jobs:'" in str(error_of("on: push\n"))
    assert "empty" in str(error_of(""))
    assert "must be a mapping" in str(error_of("- a\n- b\n"))


def test_needs_must_exist_and_not_cycle() -> None:
    assert "not a job" in str(error_of("on: push\njobs:\n  a:\n    runs-on: x\n    needs: b\n    steps: [{run: a}]\n"))
    err = error_of(
        "on: push\njobs:\n  a:\n    runs-on: x\n    needs: b\n    steps: [{run: a}]\n"
        "  b:\n    runs-on: x\n    needs: [a]\n    steps: [{run: a}]\n"
    )
    assert "cycle" in str(err)


def test_job_order_respects_needs() -> None:
    w = wf(
        """
        on: push
        jobs:
          test:
            needs: [build, lint]
            runs-on: x
            steps: [{run: a}]
          build:
            runs-on: x
            steps: [{run: a}]
          lint:
            runs-on: x
            steps: [{run: a}]
        """
    )
    assert job_order(w) == ["build", "lint", "test"]


def test_unsupported_jobs_are_flagged_not_rejected() -> None:
    w = wf(
        """
        on: push
        jobs:
          reuse:
            uses: octo/repo/.github/workflows/x.yml@main
          box:
            runs-on: x
            container: node:20
            steps: [{run: a}]
          fine:
            runs-on: x
            steps: [{run: a}]
        """
    )
    assert "reusable workflow" in (w.jobs["reuse"].unsupported or "")
    assert "container" in (w.jobs["box"].unsupported or "")
    assert w.jobs["fine"].unsupported is None


def test_if_accepts_booleans_bare_expressions_and_status_functions() -> None:
    w = wf(
        """
        on: push
        jobs:
          a:
            runs-on: x
            steps:
              - run: a
                if: false
              - run: b
                if: always() && github.event_name == 'push'
              - run: c
                if: "!cancelled()"
        """
    )
    assert [s.if_ for s in w.jobs["a"].steps] == [False, "always() && github.event_name == 'push'", "!cancelled()"]


def test_dispatch_inputs_and_triggers() -> None:
    w = wf(
        """
        on:
          workflow_dispatch:
            inputs:
              level: {type: choice, options: [a, b], default: a}
          push:
        jobs:
          a:
            runs-on: x
            steps: [{run: a}]
        """
    )
    assert w.triggered_by("push") and w.triggered_by("workflow_dispatch") and not w.triggered_by("pull_request")
    assert w.dispatch_inputs()["level"]["default"] == "a"


def test_matrix_expansion_include_exclude() -> None:
    combos = expand_matrix(
        {
            "os": ["ubuntu", "macos"],
            "py": ["3.11", "3.12"],
            "exclude": [{"os": "macos", "py": "3.11"}],
            "include": [{"py": "3.12", "experimental": True}, {"os": "windows", "py": "3.13"}],
        }
    )
    assert combos == [
        {"os": "ubuntu", "py": "3.11"},
        {"os": "ubuntu", "py": "3.12", "experimental": True},
        {"os": "macos", "py": "3.12", "experimental": True},
        {"os": "windows", "py": "3.13"},
    ]
    assert filter_combos(combos, {"os": "macos"}) == [{"os": "macos", "py": "3.12", "experimental": True}]
    assert filter_combos(combos, {"experimental": "true"})[0]["os"] == "ubuntu"
    with pytest.raises(MatrixError):
        expand_matrix({"os": "ubuntu"})
    assert expand_matrix({"include": [{"a": 1}, {"a": 2}]}) == [{"a": 1}, {"a": 2}]


W = "on: push\nenv: {W: '${{ env.X }}'}\njobs:\n  a:\n    runs-on: x\n    steps: [{run: a}]\n"


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (S + "      - uses: a/b@v1\n        with: {key: '${{ foo.bar }}'}\n", "with.key of step 1 ('a/b@v1') in job"),
        (S + "      - name: Build\n        run: a\n        shell: ${{ x.y }}\n", "shell of step 1 ('Build') in job"),
        (S + "      - id: t\n        run: a\n        timeout-minutes: ${{ foo.t }}\n", "timeout-minutes of step 1"),
        (S + "      - run: a\n        working-directory: ${{ a ++ }}\n", "working-directory of step 1 ('a')"),
        (S + "      - run: a\n        env: {X: '${{ q.r }}'}\n", "env.X of step 1 ('a') in job 'a'"),
        (J + "    env:\n      A: ${{ steps.x }}\n    steps: [{run: a}]\n", "jobs.a.env.A"),
        (J + "    timeout-minutes: ${{ env.T }}\n    steps: [{run: a}]\n", "jobs.a.timeout-minutes"),
        (J + "    outputs: {o: '${{ nope.o }}'}\n    steps: [{run: a}]\n", "jobs.a.outputs.o"),
        (W, "the workflow's env.W"),
    ],
)
def test_expression_errors_name_the_field_and_step(body: str, where: str) -> None:
    message = str(error_of(body))
    assert f"invalid expression in {where}" in message
    assert "in other" not in message and "within expression" in message


def test_unknown_context_errors_list_the_contexts_of_the_field() -> None:
    message = str(error_of(J + "    env:\n      A: ${{ steps.x }}\n    steps: [{run: a}]\n"))
    assert "contexts available here: github, vars, inputs, needs, strategy, matrix, secrets" in message

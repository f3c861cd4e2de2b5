"""`vitbench tasks`: the suites, their tasks, and whether each task's data is there."""

from __future__ import annotations

from tabulate import tabulate

from vitbench.commands import command, options


def _define(fv):
    from absl import flags

    flags.DEFINE_string("suite", None, "A suite name (e.g. vtab1k) or the path of a suite "
                        "TOML file; without it, list the suites.", flag_values=fv)
    options.define_data_dir(fv)
    flags.DEFINE_boolean("status", True, "Check whether each task's data is present.",
                         flag_values=fv)
    flags.DEFINE_boolean("prepare", False, "Download and prepare the suite's TFDS data now "
                         "(what `vitbench run` would do on first use), e.g. on a machine with "
                         "network before an offline job (VITBENCH_OFFLINE); data that needs "
                         "manual files is listed, not prepared.", flag_values=fv)


def suite_rows():
    from vitbench import tasks

    return [{"suite": name, "tasks": len(suite.tasks), "description": suite.description}
            for name, suite in ((n, tasks.load_suite(n)) for n in tasks.suite_names())]


def task_rows(suite, statuses=None):
    """One row per task; `statuses` (task name -> sources.Status) adds the data column."""
    rows = []
    for task in suite.tasks:
        row = {"task": task.name, "group": task.group, "classes": task.num_classes,
               "dataset": task.tfds_spec if task.source == "tfds" else f"{task.source}:"
                                                                       f"{task.dataset}",
               "fit": task.split("fit"), "test": task.split("test")}
        if statuses:
            row["data"] = statuses[task.name].state
        rows.append(row)
    return rows


def prepare(suite, data_dir) -> bool:
    """Prepares, once each, every TFDS dataset of the suite (ImageNet-ReaL included) that TFDS
    downloads (or prepares from the manual files there) or vitbench generates, going on past
    a failure; returns whether all that were tried succeeded. The status table that follows
    shows the rest."""
    from vitbench import offline
    from vitbench.data import sources

    if offline.is_offline():
        raise ValueError(f"--prepare downloads, and {offline.VARIABLE} is set: run it where "
                         "there is network, without that variable")
    needed, failed = {}, []
    for task in suite.tasks:
        for each in (task, task.real_labels_task()):
            if each is not None and each.source == "tfds":
                needed.setdefault(each.tfds_spec, each)
    for spec, task in needed.items():
        status = sources.status(task, data_dir)
        if status.state in (sources.WILL_DOWNLOAD, sources.WILL_GENERATE):
            print(f"{spec}: preparing ({status.state})", flush=True)
            try:
                sources.tfds_prepared_builder(task, data_dir)
            except OSError as error:  # a failed download: say so, go on with the others
                print(f"{spec}: failed: {error}", flush=True)
                failed.append(spec)
        elif status.state == sources.NEEDS_MANUAL and task not in suite.tasks:
            print(f"not prepared: {status.detail}")  # ReaL: the table below leaves it out
    return not failed


@command("tasks", _define)
def run(fv):
    """List the suites, or a suite's tasks with splits, classes, group and data status.

    Data status: `ready` (prepared in the data dir), `will generate` (vitbench renders it),
    `will download` (TFDS fetches it on first use), `needs manual files` (the detail below the
    table says which files go where), `missing` (a folder or CSV file of yours that is not
    there, or holds no images; a TFDS dataset not prepared while VITBENCH_OFFLINE is set) or
    `invalid` (its classes do not match the task's `num_classes`).
    """
    from vitbench import tasks

    if fv.prepare and not fv.suite:
        raise ValueError("--prepare needs --suite: the suite whose data to prepare")
    if not fv.suite:
        print(tabulate(suite_rows(), headers="keys"))
        print("\n`vitbench tasks --suite NAME` lists a suite's tasks and checks their data.")
        return 0
    from vitbench.data import sources  # TensorFlow: only where data is looked at

    suite = tasks.load_suite(fv.suite)
    data_dir = fv.data_dir or sources.default_data_dir()
    print(f"suite {suite.name}: {suite.description}\ndata dir: {data_dir}\n")
    prepared = prepare(suite, data_dir) if fv.prepare else True
    statuses = {task.name: sources.status(task, data_dir) for task in suite.tasks} \
        if fv.status else None
    print(tabulate(task_rows(suite, statuses), headers="keys"))
    details = [status.detail for status in (statuses or {}).values() if not status.usable]
    if details:
        print("\nto do before running this suite:\n- " + "\n- ".join(details))
    return 0 if prepared else 1

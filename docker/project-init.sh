#!/bin/sh
# The project repository on its volume at the image's commit; then the given command (the
# Celery worker, `mt ...`).
#
# Every container that runs stages mounts one volume at /opt/mt/project (compose: mt-project),
# so every run's workspace, DVC experiment and git ref lives in one repository that outlives the
# containers, and `down` + `up` keeps them. The image carries its commit as a bare clone
# (/opt/mt/repo.git, no remotes or credentials):
# - a volume without a repository gets one at the image's commit (the files Docker copied from
#   the image into a new volume are that commit's, so nothing is lost);
# - a repository at another commit moves to the image's commit when its tracked files are as
#   committed (a new image on an old volume); one changed by hand is left as it is, with a
#   warning, and the stages run the code found there.
# Two containers starting at once take turns (flock, 120 s).
set -eu

project="${MT_PROJECT_DIR:-/opt/mt/project}"
image_repo="${MT_IMAGE_REPO:-/opt/mt/repo.git}"

mkdir -p "$project/.dvc/tmp"
exec 9>"$project/.dvc/tmp/project-init.lock"
if ! flock -w 120 9; then
    echo "mt-project-init: $project: another container held the init lock for 120 s" >&2
    exit 1
fi

image_commit="$(git -C "$image_repo" rev-parse HEAD)"
if [ ! -e "$project/.git" ]; then
    git -C "$project" init -q
    git -C "$project" fetch -q "$image_repo" HEAD
    git -C "$project" reset -q --hard FETCH_HEAD
    echo "mt-project-init: $project: a repository at the image's commit ${image_commit}" >&2
else
    current="$(git -C "$project" rev-parse -q --verify HEAD || true)"
    if [ "$current" != "$image_commit" ]; then
        if [ -n "$(git -C "$project" status --porcelain --untracked-files=no)" ]; then
            echo "mt-project-init: WARNING $project has changes of its own at ${current}; left" \
                "as it is, not moved to the image's commit ${image_commit}" >&2
        else
            git -C "$project" fetch -q "$image_repo" HEAD
            git -C "$project" checkout -q --detach FETCH_HEAD
            echo "mt-project-init: $project: ${current} -> the image's commit ${image_commit}" >&2
        fi
    fi
fi
exec 9>&-
exec "$@"

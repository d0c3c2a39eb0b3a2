#!/usr/bin/env bash
# Install the agent CLIs the API tests drive (Claude Code, Codex CLI) into a project-local
# prefix, .agent-clis/ (git-ignored), from the npm registry. tests/test_agent_clis.py finds
# them there (or on PATH) and skips, saying why, when node/npm or the CLIs are missing.
# Usage: scripts/install-agent-clis.sh [PREFIX]
set -euo pipefail
prefix="${1:-$(cd "$(dirname "$0")/.." && pwd)/.agent-clis}"
if ! command -v npm >/dev/null; then
    echo "npm not found: install Node.js 18+ and npm (e.g. apt-get install -y nodejs npm)" >&2
    exit 1
fi
mkdir -p "$prefix"
npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
    @anthropic-ai/claude-code@2 @openai/codex@0
"$prefix/node_modules/.bin/claude" --version
"$prefix/node_modules/.bin/codex" --version

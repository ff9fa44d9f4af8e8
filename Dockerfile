# syntax=docker/dockerfile:1
# agentmeter: the HTTP API and every stage worker under one supervisor (node dist/ops/start.js).
# One stage alone:  docker run ... agentmeter node dist/stages/run.js price
# Migrations:       docker run ... agentmeter node dist/ops/migrate.js

# --- build: compile with every dependency, then keep only the production ones ---------------
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# The npm workspace (the SDK) must be there for npm ci to install it.
COPY sdk/package.json sdk/
# Fixes to dependencies, applied by npm's postinstall (patch-package): see patches/.
COPY patches/ patches/
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

# --- run: the compiled code plus the files it reads at run time (Lua scripts, migrations, console assets) ---
FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    HTTP_HOST=0.0.0.0 \
    HTTP_PORT=8080
WORKDIR /app
COPY --from=build /app/package.json /app/package-lock.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/pipeline/lua ./pipeline/lua
COPY --from=build /app/schemas/migrations ./schemas/migrations
COPY --from=build /app/api/console/static ./api/console/static
USER node
EXPOSE 8080
CMD ["node", "dist/ops/start.js"]

# Multi-stage build: a static binary (no cgo) in a distroless image that runs as non-root.
# The go build line is the one .ci/run runs (it checks that they stay identical).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o bin/wsbridge ./cmd/wsbridge

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/bin/wsbridge /usr/local/bin/wsbridge
USER nonroot:nonroot
# 8080: browsers (WebSockets and the proxied app). The internal API stays on loopback unless
# WSBRIDGE_INTERNAL_LISTEN says otherwise (then WSBRIDGE_API_TOKEN is required).
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/wsbridge"]

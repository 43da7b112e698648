"""Thin grpc.aio servicers: validate the request, call the domain, convert the reply."""

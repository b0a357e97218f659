"""ServingError: a canonical status code and TF Serving's message; REST and gRPC map it."""

import grpc

# canonical code -> HTTP status, as TF Serving's REST handler maps them
HTTP = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400, "NOT_FOUND": 404,
        "ALREADY_EXISTS": 409, "ABORTED": 409, "RESOURCE_EXHAUSTED": 429, "UNIMPLEMENTED": 501,
        "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504, "INTERNAL": 500, "UNKNOWN": 500,
        "PAYLOAD_TOO_LARGE": 413, "REQUEST_TIMEOUT": 408}


class ServingError(Exception):
    """An error with a canonical code name (``grpc.StatusCode`` name) and message."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self):
        return HTTP.get(self.code, 500)

    @property
    def grpc_code(self):
        return getattr(grpc.StatusCode, self.code, grpc.StatusCode.INVALID_ARGUMENT)

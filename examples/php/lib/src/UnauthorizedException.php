<?php

declare(strict_types=1);

namespace WsBridge;

/** 401: missing or wrong bearer token (WSBRIDGE_API_TOKEN). */
final class UnauthorizedException extends ApiException
{
}

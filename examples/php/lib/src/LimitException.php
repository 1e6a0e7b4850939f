<?php

declare(strict_types=1);

namespace WsBridge;

/** 409: the request would go beyond a limit, e.g. a join past WSBRIDGE_MAX_CHANNELS; nothing was done. */
final class LimitException extends ApiException
{
}

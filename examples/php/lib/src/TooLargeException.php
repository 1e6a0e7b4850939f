<?php

declare(strict_types=1);

namespace WsBridge;

/** 413: body over WSBRIDGE_MAX_PUSH_BODY, or batch over WSBRIDGE_MAX_BATCH. */
final class TooLargeException extends ApiException
{
}

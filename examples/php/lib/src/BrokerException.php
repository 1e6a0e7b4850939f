<?php

declare(strict_types=1);

namespace WsBridge;

/** 502: applied on this node, but forwarding to other nodes failed. */
final class BrokerException extends ApiException
{
}

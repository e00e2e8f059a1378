// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title TestMulticall
/// @notice The `aggregate3` entry point of Multicall3, for test chains that lack the canonical
/// deployment. Tests install its runtime code at 0xcA11bde05977b3631167028862bE2a173976CA11.
contract TestMulticall {
    struct Call3 {
        address target;
        bool allowFailure;
        bytes callData;
    }

    struct Result {
        bool success;
        bytes returnData;
    }

    function aggregate3(Call3[] calldata calls) external payable returns (Result[] memory results) {
        results = new Result[](calls.length);
        for (uint256 i = 0; i < calls.length; i++) {
            (bool ok, bytes memory ret) = calls[i].target.call(calls[i].callData);
            require(ok || calls[i].allowFailure, "Multicall3: call failed");
            results[i] = Result(ok, ret);
        }
    }
}
